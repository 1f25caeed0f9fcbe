"""ManageSieve (RFC 5804) on the wire, without I/O: a command's bytes in,
its verb and arguments out; responses out as bytes. Pure functions, tested
with byte strings and hypothesis (tests/sieve/test_protocol.py)."""

from __future__ import annotations

import re
from typing import NamedTuple


class ProtocolError(ValueError):
    """A command that cannot be read: answered NO with this reason."""


class Command(NamedTuple):
    verb: str
    args: list[str | int]


# RFC 5804 §4: literal-c2s is "{" number "+}" CRLF; we take "{N}" too (the
# synchronizing form some clients send), without a continuation to wait for.
LITERAL_AT_END = re.compile(rb"\{([0-9]+)\+?\}\r?\n\Z")
_ATOM = re.compile(rb"[A-Za-z0-9_.\-]+")
_NUMBER = re.compile(rb"[0-9]+")


def literal_size(line: bytes) -> int | None:
    """The size of the literal that this line announces at its end, if any:
    the session reads that many octets, then the rest of the command."""
    match = LITERAL_AT_END.search(line)
    return int(match.group(1)) if match else None


def parse_command(data: bytes) -> Command:
    """One whole command (its literals included, ending in CRLF) -> verb and
    arguments: strings (quoted or literal) and numbers (RFC 5804 §4)."""
    position = 0
    end = len(data)
    if data.endswith(b"\r\n"):
        end -= 2
    elif data.endswith(b"\n"):
        end -= 1
    match = _ATOM.match(data, position)
    if match is None:
        raise ProtocolError("expected a command name")
    verb = match.group().decode("ascii").upper()
    position = match.end()
    args: list[str | int] = []
    while position < end:
        if data[position:position + 1] != b" ":
            raise ProtocolError("expected a space between arguments")
        position += 1
        char = data[position:position + 1]
        if char == b'"':
            value, position = _quoted(data, position + 1, end)
            args.append(value)
        elif char == b"{":
            close = data.find(b"}", position)
            header = data[position:close + 1]
            match = re.fullmatch(rb"\{([0-9]+)\+?\}", header)
            if close < 0 or match is None or data[close + 1:close + 3] != b"\r\n":
                raise ProtocolError("malformed literal")
            size = int(match.group(1))
            start = close + 3
            if start + size > end:
                raise ProtocolError("literal shorter than announced")
            args.append(_text(data[start:start + size]))
            position = start + size
        elif (number := _NUMBER.match(data, position)) is not None and (
                number.end() == end or data[number.end():number.end() + 1] == b" "):
            args.append(int(number.group()))
            position = number.end()
        else:
            raise ProtocolError("expected a string, a literal or a number")
    return Command(verb, args)


def _quoted(data: bytes, position: int, end: int) -> tuple[str, int]:
    """RFC 5804 §4: quoted strings escape only '"' and '\\', hold no CR or LF."""
    out = bytearray()
    while position < end:
        byte = data[position]
        if byte == 0x22:
            return _text(bytes(out)), position + 1
        if byte == 0x5C:
            position += 1
            if position >= end or data[position] not in (0x22, 0x5C):
                raise ProtocolError("a quoted string escapes only \" and \\")
            byte = data[position]
        elif byte in (0x0D, 0x0A):
            raise ProtocolError("a quoted string holds no line break: use a literal")
        out.append(byte)
        position += 1
    raise ProtocolError("quoted string not closed")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("strings must be UTF-8") from None


# --- responses -----------------------------------------------------------------------


def string(value: str) -> bytes:
    """A quoted string when it may be one (RFC 5804 §4), else a literal."""
    raw = value.encode("utf-8")
    if len(raw) < 1024 and not re.search(rb"[\r\n\0]", raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def response(kind: str, text: str = "", code: str = "") -> bytes:
    """``OK``, ``NO`` or ``BYE`` with an optional (code) and human text."""
    line = kind.encode()
    if code:
        line += b" (" + code.encode() + b")"
    if text:
        line += b" " + string(text)
    return line + b"\r\n"


def capability_lines(capabilities: list[tuple[str, str | None]]) -> bytes:
    return b"".join(string(name) + (b" " + string(value) if value is not None else b"")
                    + b"\r\n" for name, value in capabilities)
