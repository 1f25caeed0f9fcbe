"""The webmail's settings as a section of a Sieve script: pure, no database.
The section written for each setting, and its composition with a script the
user wrote: valid Sieve, the user's lines kept, replaced and removed whole."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.sieve.commands import compile_script
from apps.sieve.interpreter import Envelope, evaluate
from apps.sieve.sections import AutoReply, section_of, settings_section, with_section

LETTER = b"From: bob@example.org\r\nTo: alice@ours.example\r\nSubject: hi\r\n\r\nHello\r\n"
ENVELOPE = Envelope("bob@example.org", "alice@ours.example")
HAND_WRITTEN = ('# sort the lists\r\nrequire ["fileinto"];\r\nrequire "envelope";\r\n'
                'if header :contains "subject" "hi" {\r\n    fileinto "Greetings";\r\n}\r\n')


def outcome(script: str):
    return evaluate(compile_script(script), LETTER, ENVELOPE)


def test_nothing_set_is_no_section():
    assert settings_section(reply=None, forward_to=[], keep_copy=True) == ""


def test_the_reply_with_its_dates_quotes_and_line_breaks():
    section = settings_section(
        reply=AutoReply('Out "of" office', 'Back on Monday.\nC:\\Users\\me', date(2026, 12, 1),
                        date(2026, 12, 24)), forward_to=[], keep_copy=False)
    assert section.startswith("# BEGIN Mailhost settings") and section.endswith(
        "# END Mailhost settings\r\n")
    commands = compile_script(section)
    vacation = commands[1].block[0]
    assert vacation.name == "vacation"
    assert vacation.tags[":subject"].values == ('Out "of" office',)
    assert vacation.positional[0].values == ("Back on Monday.\r\nC:\\Users\\me",)
    # RFC 5260: between the first and the last day only.
    assert 'currentdate :value "ge" "date" "2026-12-01"' in section
    assert 'currentdate :value "le" "date" "2026-12-24"' in section


def test_forwarding_with_and_without_a_copy():
    kept = outcome(settings_section(reply=None, forward_to=["x@example.net", "y@example.net"],
                                    keep_copy=True))
    assert kept.redirects == ["x@example.net", "y@example.net"] and kept.filings == {
        "INBOX": ()}
    # Without a copy the script stops: nothing of the user's rules files it here.
    gone = outcome(with_section(HAND_WRITTEN, settings_section(
        reply=None, forward_to=["x@example.net"], keep_copy=False)))
    assert gone.redirects == ["x@example.net"] and gone.filings == {}


def test_a_section_goes_after_the_users_requires_and_comes_out_whole():
    section = settings_section(reply=AutoReply("", "away"), forward_to=["x@example.net"],
                               keep_copy=True)
    combined = with_section(HAND_WRITTEN, section)
    lines = combined.split("\r\n")
    assert lines[:3] == HAND_WRITTEN.split("\r\n")[:3]  # the comment and the requires first
    assert lines[3].startswith("# BEGIN Mailhost settings")
    result = outcome(combined)
    assert result.vacation is not None and result.redirects == ["x@example.net"]
    assert result.filings == {"Greetings": ()}  # the user's rule still runs
    assert section_of(combined) == section
    # Saved again: replaced in place, not added twice; emptied: taken out.
    again = with_section(combined, settings_section(reply=None, forward_to=["z@example.net"],
                                                    keep_copy=True))
    assert again.count("# BEGIN Mailhost settings") == 1 and "z@example.net" in again
    assert with_section(again, "") == HAND_WRITTEN
    assert with_section("", "") == ""


_names = st.text("abcdefgh", min_size=1, max_size=6)
_rules = st.lists(st.builds(
    lambda header, text, folder: (f'if header :contains "{header}" "{text}" '
                                  f'{{ fileinto "{folder}"; }}'),
    _names, _names, _names), max_size=4)


# No deadline: each example parses and checks two scripts, which a loaded
# machine can stretch past hypothesis' 200 ms; the time is not what is tested.
@settings(deadline=None)
@given(_rules, st.lists(st.emails(), max_size=3), st.booleans(),
       st.one_of(st.none(), st.text(max_size=40)))
def test_any_combination_stays_valid_sieve_and_comes_apart_again(rules, targets, keep, body):
    script = "\r\n".join(['require ["fileinto"];', *rules]) + "\r\n"
    section = settings_section(reply=None if body is None else AutoReply("", body),
                               forward_to=targets, keep_copy=keep)
    combined = with_section(script, section)
    compile_script(combined)
    assert section_of(combined) == section
    assert with_section(combined, "") == script


@pytest.mark.parametrize("script", ["", "keep;\r\n", 'require "fileinto";\r\n'])
def test_scripts_without_commands_or_requires(script):
    section = settings_section(reply=None, forward_to=["x@example.net"], keep_copy=True)
    compile_script(with_section(script, section))
