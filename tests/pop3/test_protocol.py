"""The pure POP3 parser, formatters and maildrop: bytes in, values out."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.pop3.maildrop import Entry, Maildrop
from apps.pop3.protocol import (
    Command,
    CommandError,
    decode_sasl_plain,
    err,
    multiline,
    ok,
    parse_command,
    stuffed,
    to_crlf,
    top,
    uidl,
    wire_size,
)


@pytest.mark.parametrize(("line", "expected"), [
    (b"STAT\r\n", Command("STAT")),
    (b"stat\r\n", Command("STAT")),
    (b"LIST\r\n", Command("LIST")),
    (b"LIST 3\r\n", Command("LIST", (3,))),
    (b"RETR 12\n", Command("RETR", (12,))),
    (b"TOP 1 0\r\n", Command("TOP", (1, 0))),
    (b"USER alice@example.org\r\n", Command("USER", ("alice@example.org",))),
    (b"USER a-rather-long-first.and-last-name@mail.department.example.org\r\n",
     Command("USER", ("a-rather-long-first.and-last-name@mail.department.example.org",))),
    (b"PASS  two  spaces \r\n", Command("PASS", (" two  spaces ",))),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", Command("AUTH", ("PLAIN", "AGFsaWNlAHNlY3JldA=="))),
    (b"AUTH\r\n", Command("AUTH")),
    (b"UIDL 2\r\n", Command("UIDL", (2,))),
])
def test_parse_valid_commands(line: bytes, expected: Command) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(("line", "reason"), [
    (b"\r\n", "empty command"),
    (b"   \r\n", "empty command"),
    (b"APOP alice 0123\r\n", "unknown command"),
    (b"FOO\r\n", "unknown command"),
    (b"RETR\r\n", "RETR takes 1 argument(s)"),
    (b"RETR 1 2\r\n", "RETR takes 1 argument(s)"),
    (b"RETR 0\r\n", "message number must be at least 1"),
    (b"RETR -1\r\n", "message number must be a decimal number"),
    (b"RETR x\r\n", "message number must be a decimal number"),
    (b"RETR 99999999999\r\n", "message number must be a decimal number"),
    (b"TOP 1\r\n", "TOP takes 2 argument(s)"),
    (b"TOP 1 -1\r\n", "line count must be a decimal number"),
    (b"LIST  1\r\n", "arguments are separated by one space"),
    (b"STAT 1\r\n", "STAT takes 0 argument(s)"),
    (b"PASS\r\n", "PASS needs an argument"),
    (b"USER \xff\r\n", "command is not valid UTF-8"),
    (b"NOOP\x00\r\n", "control characters in command"),
])
def test_parse_rejects_malformed_commands(line: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(line)
    assert reason in caught.value.reason


@given(st.binary(max_size=200))
def test_parse_never_fails_otherwise(line: bytes) -> None:
    try:
        command = parse_command(line)
    except CommandError as error:
        assert error.reason
    else:
        assert command.verb.isupper()


@given(st.sampled_from(["LIST", "RETR", "DELE", "UIDL"]), st.integers(1, 9_999_999_999))
def test_message_numbers_round_trip(verb: str, number: int) -> None:
    assert parse_command(f"{verb} {number}\r\n".encode()) == Command(verb, (number,))


def test_sasl_plain() -> None:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    assert decode_sasl_plain(b64(b"\0alice@example.org\0s3cret pass")) == (
        "", "alice@example.org", "s3cret pass")
    assert decode_sasl_plain(b64(b"admin\0alice\0pw")) == ("admin", "alice", "pw")
    assert decode_sasl_plain(b64("\0jörg\0pässword".encode())) == ("", "jörg", "pässword")
    for bad in ["!!!", b64(b"alice\0pw"), b64(b"\0\0pw"), b64(b"\0alice\0"), "=",
                b64(b"\0alice\0\xff"), "AGFsaWNl AHB3"]:
        with pytest.raises(CommandError):
            decode_sasl_plain(bad)


@given(st.text(), st.text(min_size=1).filter(lambda s: "\0" not in s),
       st.text(min_size=1).filter(lambda s: "\0" not in s))
def test_sasl_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    authzid = authzid.replace("\0", "")
    raw = f"{authzid}\0{authcid}\0{password}".encode()
    assert decode_sasl_plain(base64.b64encode(raw).decode()) == (authzid, authcid, password)


def test_replies() -> None:
    assert ok() == b"+OK\r\n"
    assert ok("2 320") == b"+OK 2 320\r\n"
    assert err("no such message") == b"-ERR no such message\r\n"
    assert err("in use", "IN-USE") == b"-ERR [IN-USE] in use\r\n"
    assert multiline(ok("list"), ["1 120", ".odd"]) == (
        b"+OK list\r\n1 120\r\n..odd\r\n.\r\n")
    assert multiline(ok(), []) == b"+OK\r\n.\r\n"


def test_crlf_normalisation_and_stuffing() -> None:
    assert to_crlf(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n"
    assert to_crlf(b"") == b""
    assert to_crlf(b"lone\rcr\n") == b"lone\rcr\r\n"
    assert to_crlf(b"8bit \xe9\xff\n") == b"8bit \xe9\xff\r\n"
    assert stuffed(b".top\r\nmid\r\n.\r\n..two\r\n") == (
        b"..top\r\nmid\r\n..\r\n...two\r\n.\r\n")
    assert stuffed(b"") == b".\r\n"


def unstuff(wire: bytes) -> bytes:
    """What a client does with a multi-line response (RFC 1939 §3)."""
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")[:-1] if wire[:-3] else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@given(st.binary(max_size=500) | st.lists(st.sampled_from(
    [b".", b"\r", b"\n", b"\r\n", b"..", b"a", b"\xff", b" "]), max_size=60).map(b"".join))
def test_wire_form_round_trips_and_matches_wire_size(data: bytes) -> None:
    crlf = to_crlf(data)
    assert len(crlf) == wire_size(data)
    assert crlf.replace(b"\r\n", b"") .count(b"\n") == 0
    wire = stuffed(crlf)
    assert b"\r\n.\r\n" not in wire[:-3]
    assert unstuff(wire) == crlf
    # Nothing but line ends changes.
    assert crlf.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n") + (
        b"\n" if data and not data.endswith(b"\n") else b"")


MESSAGE = b"From: a@b\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"


def test_top() -> None:
    assert top(MESSAGE, 0) == b"From: a@b\r\nSubject: s\r\n\r\n"
    assert top(MESSAGE, 2) == b"From: a@b\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\n"
    assert top(MESSAGE, 10) == MESSAGE
    assert top(b"From: a@b\r\n", 3) == b"From: a@b\r\n"
    assert top(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"


def test_uidl_values_are_short_printable_and_distinct() -> None:
    values = {uidl(v, u) for v in (1, 4_294_967_295) for u in (1, 10, 4_294_967_295)}
    assert len(values) == 6
    for value in values:
        assert 1 <= len(value) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in value)
    # Not ambiguous across the separator.
    assert uidl(11, 1) != uidl(1, 11)


def test_maildrop_marks_and_reset() -> None:
    drop = Maildrop(7, 99, [Entry(3, 100, "a"), Entry(5, 200, "b"), Entry(9, 50, "c")])
    assert drop.stat() == (3, 350)
    assert drop.unique_id(2) == "99.5"
    drop.delete(2)
    assert drop.stat() == (2, 150)
    assert [n for n, _ in drop.live()] == [1, 3]
    with pytest.raises(CommandError, match="message 2 is deleted"):
        drop.get(2)
    with pytest.raises(CommandError, match="message 2 is deleted"):
        drop.delete(2)
    with pytest.raises(CommandError, match="no message 4"):
        drop.get(4)
    drop.delete(3)
    assert drop.deleted_uids() == [5, 9]
    drop.reset()
    assert drop.stat() == (3, 350) and drop.deleted_uids() == []
