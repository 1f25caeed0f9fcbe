"""Running Sieve scripts over messages (RFC 5228 and its extensions): pure,
no database. Each extension's behaviour a user relies on, and the implicit
keep's rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.sieve.commands import compile_script
from apps.sieve.grammar import SieveSyntaxError
from apps.sieve.interpreter import Envelope, Outcome, _glob, _glob_matches, _glob_pieces, evaluate

MESSAGE = (b"Received: from a\r\nReceived: from b\r\n"
           b"From: Bob <bob+news@example.org>\r\nTo: alice@ours.example\r\n"
           b"Subject: =?utf-8?q?[dev]_H=C3=A9llo?=\r\nX-Spam-Score: 7\r\n"
           b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\nPlease unsubscribe m=C3=A9\r\n"
           b"--b\r\nContent-Type: text/html\r\n\r\n<p>html only</p>\r\n--b--\r\n")
ENVELOPE = Envelope("bob@example.org", "alice+lists@ours.example")


def run(script: str, data: bytes = MESSAGE, envelope: Envelope = ENVELOPE) -> Outcome:
    return evaluate(compile_script(script), data, envelope)


def test_no_script_action_keeps_into_inbox():
    assert run("").filings == {"INBOX": ()}


def test_fileinto_cancels_the_implicit_keep_and_copy_does_not():
    assert run('require "fileinto"; fileinto "A";').filings == {"A": ()}
    assert run('require ["fileinto", "copy"]; fileinto :copy "A";').filings == {
        "A": (), "INBOX": ()}
    assert run('require "fileinto"; fileinto "A"; fileinto "A"; keep;').filings == {
        "A": (), "INBOX": ()}


def test_discard_stop_and_if_chains():
    assert run("discard;").filings == {}
    assert run('require "fileinto"; if true { stop; } fileinto "X";').filings == {"INBOX": ()}
    script = ('require "fileinto"; if false { fileinto "A"; } elsif true { fileinto "B"; }'
              ' elsif true { fileinto "C"; } else { fileinto "D"; }')
    assert run(script).filings == {"B": ()}


@pytest.mark.parametrize(("test", "expected"), [
    ('header :contains "subject" "héllo"', True),  # RFC 2047 decoded, case-folded
    ('header :is "subject" "[dev] héllo"', True),
    ('header :is :comparator "i;octet" "subject" "[dev] héllo"', False),
    ('header :matches "subject" "[*] h?llo"', True),
    ('address :domain "from" "example.org"', True),
    ('address :localpart "from" "bob+news"', True),
    ('address :user "from" "bob"', True),
    ('address :detail "from" "news"', True),
    ('address :detail "to" ""', False),  # RFC 5233 §4: no detail at all never matches
    ('envelope :detail "to" "lists"', True),
    ('envelope :all "from" "bob@example.org"', True),
    ('exists ["from", "x-spam-score"]', True),
    ('exists "x-missing"', False),
    ("size :over 100", True),
    ("size :under 100", False),
    ('header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5"', True),
    ('header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "5"', False),
    ('header :count "eq" :comparator "i;ascii-numeric" "received" "2"', True),
    ('body :contains "unsubscribe mé"', True),  # :text, decoded
    ('body :contains "html only"', True),  # text/html is text too
    ('body :content "text/plain" :contains "html only"', False),
    ('body :raw :contains "m=C3=A9"', True),
    ('not anyof (false, header :is "to" "nobody")', True),
    ('allof (true, false)', False),
])
def test_tests(test, expected):
    script = ('require ["envelope", "subaddress", "relational", "body", "fileinto",'
              ' "comparator-i;ascii-numeric"];'
              f' if {test} {{ fileinto "Hit"; }}')
    assert ("Hit" in run(script).filings) is expected


def test_imap4flags_set_add_remove_and_the_implicit_keep_takes_them():
    script = ('require ["imap4flags", "fileinto"]; setflag "\\\\Seen"; addflag ["a b", "\\\\seen"];'
              ' removeflag "a"; if hasflag :contains "b" { fileinto "F"; }'
              ' fileinto :flags "\\\\Flagged" "G"; keep;')
    assert run(script).filings == {"F": ("\\Seen", "b"), "G": ("\\Flagged",),
                                   "INBOX": ("\\Seen", "b")}


def test_variables_matches_and_modifiers():
    script = ('require ["variables", "fileinto"];'
              ' if header :matches "subject" "[*] *" { set :upperfirst "list" "${1}"; }'
              ' set :length "n" "${list}"; fileinto "Lists/${list}-${n}-${undefined}";')
    assert run(script).filings == {"Lists/Dev-3-": ()}
    assert run('require ["variables", "fileinto"]; set "a" "x"; '
               'if string :is "${a}" "x" { fileinto "yes"; }').filings == {"yes": ()}


def test_redirect_vacation_and_reject():
    outcome = run('require ["copy", "vacation"]; redirect "a@remote.example";'
                  ' redirect :copy "b@remote.example"; redirect "a@remote.example";'
                  ' vacation :days 3 :subject "Away" :addresses ["me@alias.example"] "Back";')
    assert outcome.redirects == ["a@remote.example", "b@remote.example"]
    assert outcome.filings == {}
    assert outcome.vacation is not None and (outcome.vacation.days, outcome.vacation.subject,
                                             outcome.vacation.reason) == (3, "Away", "Back")
    assert outcome.vacation.addresses == ("me@alias.example",)
    rejected = run('require "reject"; reject "not wanted";')
    assert (rejected.rejection, rejected.filings) == ("not wanted", {})


def test_a_runtime_error_keeps_the_message():
    # RFC 5228 §2.10.6: redirect to something that is no address.
    outcome = run('require "fileinto"; fileinto "A"; redirect "nobody";')
    assert outcome.filings == {"INBOX": ()} and outcome.redirects == []
    assert "not an address" in outcome.error


def test_many_wildcards_over_a_long_header_answer():
    # A backtracking regular expression would take years here.
    data = b"Subject: " + b"a" * 5000 + b"\r\n\r\nx\r\n"
    script = 'require "fileinto"; if header :matches "subject" "*a*a*a*a*a*a*a*a*b" { discard; }'
    assert run(script, data).filings == {"INBOX": ()}


@given(st.text(alphabet="ab*?\\", max_size=8), st.text(alphabet="ab*?", max_size=10))
def test_glob_agrees_with_its_definition(pattern, value):
    expected = _matches_by_definition(_pieces(pattern), value)
    assert _glob_matches(_glob_pieces(pattern), value) is expected
    assert (_glob("i;octet", pattern, value) is not None) is expected


def _pieces(pattern: str) -> list[str]:
    """The glob as its pieces: "*", "?", or one literal character as "=c"."""
    pieces, escaped = [], False
    for char in pattern:
        if escaped or char not in "*?\\":
            pieces.append("=" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            pieces.append(char)
    if escaped:  # a trailing backslash stands for itself
        pieces.append("=\\")
    return pieces


def _matches_by_definition(pieces: list[str], value: str) -> bool:
    """RFC 5228 §2.7.1, by recursion (small inputs only)."""
    if not pieces:
        return not value
    head, rest = pieces[0], pieces[1:]
    if head == "*":
        return any(_matches_by_definition(rest, value[i:]) for i in range(len(value) + 1))
    if not value:
        return False
    return (head == "?" or head[1] == value[0]) and _matches_by_definition(rest, value[1:])


# --- RFC 5260 date and currentdate ------------------------------------------------------

NOW = datetime(2026, 12, 24, 18, 30, 5, tzinfo=timezone(timedelta(hours=1)))
DATED = b"Date: Thu, 26 Nov 2026 23:10:00 -0500\r\nSubject: x\r\n\r\nbody\r\n"


def dated(test: str) -> bool:
    script = f'require ["date", "relational", "fileinto"]; if {test} {{ fileinto "Yes"; }}'
    outcome = evaluate(compile_script(script), DATED, ENVELOPE, now=NOW)
    return "Yes" in outcome.filings


@pytest.mark.parametrize(("test", "expected"), [
    ('currentdate "date" "2026-12-24"', True),
    ('currentdate :value "ge" "date" "2026-12-01"', True),
    ('allof(currentdate :value "ge" "date" "2026-12-01",'
     ' currentdate :value "le" "date" "2026-12-23")', False),
    ('currentdate :zone "+0000" "hour" "17"', True),  # §4.1.1: converted to the zone
    ('currentdate "weekday" "4"', True),  # a Thursday; 0 is Sunday
    ('currentdate "julian" "61398"', True),  # the Modified Julian Day
    ('currentdate "iso8601" "2026-12-24T18:30:05+01:00"', True),
    ('currentdate "std11" "Thu, 24 Dec 2026 18:30:05 +0100"', True),
    ('date :originalzone "date" "date" "2026-11-26"', True),  # the field's own zone
    ('date "date" "date" "2026-11-27"', True),  # the zone of ``now``: +0100
    ('date :zone "-0500" "date" "zone" "-0500"', True),
    ('date "x-missing" "year" "2026"', False),  # §4.1: no field, no match
])
def test_date_and_currentdate(test, expected):
    assert dated(test) is expected


@pytest.mark.parametrize("script", [
    'currentdate "date" "2026-12-24";',  # a test is not a command
    'if currentdate "date" "x" { keep; }',  # needs require "date"
    'require "date"; if currentdate "fortnight" "1" { keep; }',
    'require "date"; if date :zone "+0100" :originalzone "date" "year" "1" { keep; }',
    'require "date"; if date "year" "1" { keep; }',  # no header name
])
def test_date_tests_are_checked_on_upload(script):
    with pytest.raises(SieveSyntaxError):
        compile_script(script)
