"""ManageSieve's wire format (RFC 5804 §4): commands with quoted strings,
literals and numbers in, responses out; pure, fuzzed with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.sieve.protocol import (
    Command,
    ProtocolError,
    literal_size,
    parse_command,
    response,
    string,
)


def test_commands_with_strings_literals_and_numbers():
    assert parse_command(b'putScript "a \\"b\\"" {5+}\r\nkeep;\r\n') == Command(
        "PUTSCRIPT", ['a "b"', "keep;"])
    assert parse_command(b'HAVESPACE "x" 1024\r\n') == Command("HAVESPACE", ["x", 1024])
    assert parse_command(b"CHECKSCRIPT {2}\r\nab\r\n") == Command("CHECKSCRIPT", ["ab"])
    assert parse_command(b"LOGOUT\r\n") == Command("LOGOUT", [])


@pytest.mark.parametrize(("line", "reason"), [
    (b"\r\n", "expected a command name"),
    (b'PUTSCRIPT "open\r\n', "quoted string not closed"),
    (b'PUTSCRIPT "a\\x"\r\n', 'a quoted string escapes only " and \\'),
    (b"PUTSCRIPT {9+}\r\nab\r\n", "literal shorter than announced"),
    (b"PUTSCRIPT {x}\r\n", "malformed literal"),
    (b'PUTSCRIPT "a""b"\r\n', "expected a space between arguments"),
    (b"PUTSCRIPT atom\r\n", "expected a string, a literal or a number"),
    (b'PUTSCRIPT "\xff"\r\n', "strings must be UTF-8"),
])
def test_malformed_commands(line, reason):
    with pytest.raises(ProtocolError, match=reason.replace("\\", "\\\\")):
        parse_command(line)


def test_literal_announced_at_the_end_of_a_line():
    assert literal_size(b'PUTSCRIPT "a" {12+}\r\n') == 12
    assert literal_size(b"AUTHENTICATE {3}\r\n") == 3
    assert literal_size(b'PUTSCRIPT "{12+}"x\r\n') is None


def test_responses():
    assert response("OK") == b"OK\r\n"
    assert response("NO", "no such script", "NONEXISTENT") == (
        b'NO (NONEXISTENT) "no such script"\r\n')
    assert string('a "b" \\') == b'"a \\"b\\" \\\\"'
    assert string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"


@given(st.text(max_size=300))
def test_any_string_written_reads_back(value):
    assert parse_command(b"X " + string(value) + b"\r\n") == Command("X", [value])


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_cleanly(data):
    try:
        command = parse_command(data)
    except ProtocolError:
        return
    assert command.verb.isupper() or not command.verb.isalpha()
