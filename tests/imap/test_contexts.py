"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267) over a real socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.imap.contexts import partial, sequence_set
from apps.imap.parser import ParseError, parse_command
from tests.imap.helpers import RawIMAP


def fill(raw: RawIMAP, subjects: list[str]) -> None:
    for subject in subjects:
        data = f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode()
        raw.command(f"APPEND INBOX {{{len(data)}+}}\r\n".encode() + data)
    raw.command("SELECT INBOX")


def test_partial_results_of_search_and_sort(raw):
    caps = raw.command("CAPABILITY")[0]
    assert b" CONTEXT=SEARCH" in caps and b" CONTEXT=SORT" in caps
    fill(raw, ["e", "d", "c", "b", "a"])
    # RFC 5267 §4.4: a range of the result, 1 the first; 4:2 is 2:4.
    assert raw.command("SEARCH RETURN (PARTIAL 4:2) ALL", tag="p1")[0] == \
        b'* ESEARCH (TAG "p1") PARTIAL (2:4 2:4)\r\n'
    assert raw.command("SEARCH RETURN (PARTIAL 2:10 COUNT) 1:2,4:5", tag="p2")[0] == \
        b'* ESEARCH (TAG "p2") COUNT 4 PARTIAL (2:10 2,4:5)\r\n'
    assert raw.command("UID SEARCH RETURN (PARTIAL 6:9) ALL", tag="p3")[0] == \
        b'* ESEARCH (TAG "p3") UID PARTIAL (6:9 NIL)\r\n'
    # ESORT: the range is of the sorted result (subjects a..e are messages 5..1).
    assert raw.command("SORT RETURN (PARTIAL 1:3) (SUBJECT) UTF-8 ALL", tag="p4")[0] == \
        b'* ESEARCH (TAG "p4") PARTIAL (1:3 5,4,3)\r\n'
    for bad in ("SEARCH RETURN (PARTIAL 1) ALL", "SEARCH RETURN (PARTIAL 1:*) ALL",
                "SEARCH RETURN (PARTIAL 0:3) ALL", "SEARCH RETURN (ALL PARTIAL 1:2) ALL",
                "SORT RETURN (PARTIAL *:1) (ARRIVAL) UTF-8 ALL"):
        assert raw.command(bad)[-1].split(b" ")[1] == b"BAD"


def test_search_update_follows_flags_arrivals_and_expunges(raw, other):
    fill(raw, ["one", "two", "three", "four", "five"])
    assert raw.command("SEARCH RETURN (UPDATE) SEEN", tag="t7")[0] == \
        b'* ESEARCH (TAG "t7")\r\n'
    # This session's own STORE changes the result: ADDTO after the FETCHes.
    lines = raw.command("STORE 1,2,4 +FLAGS.SILENT (\\Seen)")
    assert lines[:-1] == [b'* ESEARCH (TAG "t7") ADDTO (0 1:2,4)\r\n']
    lines = raw.command("STORE 2 -FLAGS (\\Seen)")
    assert lines[:-1] == [b"* 2 FETCH (FLAGS (\\Recent))\r\n",
                          b'* ESEARCH (TAG "t7") REMOVEFROM (0 2)\r\n']
    # Another session's changes: a new seen message joins after its EXISTS; an
    # expunged one leaves before its EXPUNGE, by its number before removal.
    data = b"Subject: six\r\n\r\nsix\r\n"
    other.command(b"APPEND INBOX (\\Seen) {%d+}\r\n" % len(data) + data)
    other.command("SELECT INBOX")
    other.command("STORE 3:4 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    lines = raw.command("NOOP")
    assert lines[:-1] == [
        b'* ESEARCH (TAG "t7") REMOVEFROM (0 4)\r\n', b"* 3 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n",
        b"* 4 EXISTS\r\n", b"* 3 RECENT\r\n",
        b'* ESEARCH (TAG "t7") ADDTO (0 4)\r\n']
    # FETCH BODY[] sets \Seen: the result grows by it.
    lines = raw.command("FETCH 3 BODY[TEXT]")
    assert lines[-2] == b'* ESEARCH (TAG "t7") ADDTO (0 3)\r\n'
    # A tag in use by an updating search cannot name another (§4.3).
    assert raw.command("SEARCH RETURN (UPDATE) ALL", tag="t7")[-1].startswith(b"t7 BAD")
    # CANCELUPDATE ends it (§4.3.5); leaving the folder ends the others.
    assert raw.command('CANCELUPDATE "t7"')[-1].split(b" ")[1] == b"OK"
    assert raw.command("STORE 1 -FLAGS.SILENT (\\Seen)")[:-1] == []
    raw.command("UID SEARCH RETURN (UPDATE COUNT) UNSEEN", tag="u1")
    raw.command("UNSELECT")
    raw.command("SELECT INBOX")
    assert raw.command("STORE 2 +FLAGS.SILENT (\\Seen)")[:-1] == []


def test_uid_search_update_and_pinned_sequence_numbers(raw, other):
    fill(raw, ["one", "two", "three"])
    lines = raw.command("UID SEARCH RETURN (UPDATE ALL) 2:3 UNSEEN", tag="t5")
    assert lines[0] == b'* ESEARCH (TAG "t5") UID ALL 2:3\r\n'
    other.command("SELECT INBOX")
    other.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    other.command("STORE 1 +FLAGS.SILENT (\\Seen)")  # UID 2, now message 1
    # Sequence numbers were taken when the search was made (RFC 5267 §4.3):
    # UID 1 leaving renumbers nothing in the result, UID 2 leaves by its flag.
    lines = raw.command("NOOP")
    assert b'* ESEARCH (TAG "t5") UID REMOVEFROM (0 2)\r\n' in lines
    assert b"* 1 EXPUNGE\r\n" in lines


def test_sort_update_tells_sorted_positions(raw, other):
    fill(raw, ["c", "a", "e"])
    lines = raw.command("SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN", tag="t5")
    assert lines[0] == b'* ESEARCH (TAG "t5") ALL 2,1,3\r\n'
    data = b"Subject: b\r\n\r\nb\r\n"
    other.command(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
    lines = raw.command("NOOP")
    # "b" sorts second: inserted at position 2 of (a c e).
    assert lines[-2] == b'* ESEARCH (TAG "t5") ADDTO (2 4)\r\n'
    lines = raw.command("STORE 1 +FLAGS.SILENT (\\Seen)")
    assert lines[:-1] == [b'* ESEARCH (TAG "t5") REMOVEFROM (3 1)\r\n']


def test_too_many_contexts_are_refused_with_noupdate(raw, monkeypatch):
    from apps.imap import session

    monkeypatch.setattr(session, "MAX_CONTEXTS", 1)
    fill(raw, ["one"])
    raw.command("SEARCH RETURN (UPDATE) ALL")
    lines = raw.command("SEARCH RETURN (UPDATE COUNT) ALL", tag="t5")
    assert lines == [b'* ESEARCH (TAG "t5") COUNT 1\r\n',
                     b'* NO [NOUPDATE "t5"] too many searches kept up to date\r\n',
                     b"t5 OK SEARCH completed\r\n"]


def test_context_commands_parse():
    args = parse_command(b"a SEARCH RETURN (CONTEXT UPDATE PARTIAL 9:3) ALL\r\n").args
    assert args["return"] == ["CONTEXT", "UPDATE", "PARTIAL"] and args["partial"] == (3, 9)
    assert parse_command(b'a CANCELUPDATE "x" "y"\r\n').args == {"tags": ["x", "y"]}
    for bad in (b"a CANCELUPDATE\r\n", b"a CANCELUPDATE x\r\n",
                b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL\r\n"):
        with pytest.raises(ParseError):
            parse_command(bad)


@given(st.lists(st.integers(1, 60)), st.integers(1, 70), st.integers(1, 70))
def test_partial_is_the_slice_of_the_result(numbers, low, high):
    low, high = min(low, high), max(low, high)
    text = partial(numbers, low, high)
    head, _, rest = text.partition(" ")
    assert head == "PARTIAL" and rest.startswith(f"({low}:{high} ")
    body = rest[len(f"({low}:{high} "):-1]
    wanted = numbers[low - 1:high]
    if not wanted:
        assert body == "NIL"
        return
    expanded = []
    for piece in body.split(","):
        first, _, last = piece.partition(":")
        expanded += range(int(first), int(last or first) + 1)
    assert expanded == wanted
    assert body == sequence_set(wanted)
