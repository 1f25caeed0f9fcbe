"""POP3 on the wire, without I/O: command lines in, typed values out; replies
and message data out as bytes.

Everything here is a pure function of its arguments (no socket, ORM or clock),
so it is tested with byte strings and hypothesis (tests/pop3/test_protocol.py).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from apps.directory.sasl import decode_plain
from mailhost.errors import Invalid

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


class CommandError(ValueError):
    """A command that cannot be carried out as sent: ``reason`` (and the RFC 2449
    §8 response ``code``, if any) go into the -ERR reply."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Command(NamedTuple):  # made for every command line: a tuple is the cheapest
    verb: str
    args: tuple[str | int, ...] = ()


# RFC 1939 §3, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4: verb -> argument kinds.
# "n" a message number (RFC 1939 §3: 1-based decimal), "lines" a non-negative
# count, "word" one token, "rest" the rest of the line (PASS, RFC 1939 §7:
# "a POP3 server may treat spaces in the argument as part of the password").
# A kind ending in "?" is optional.
_SYNTAX: dict[str, tuple[str, ...]] = {
    "USER": ("word",),
    "PASS": ("rest",),
    "STAT": (),
    "LIST": ("n?",),
    "RETR": ("n",),
    "DELE": ("n",),
    "NOOP": (),
    "RSET": (),
    "QUIT": (),
    "TOP": ("n", "lines"),
    "UIDL": ("n?",),
    "CAPA": (),
    "STLS": (),
    "AUTH": ("word?", "word?"),
}

# How many arguments each verb must have (kinds without "?").
_REQUIRED = {verb: sum(1 for kind in syntax if not kind.endswith("?"))
             for verb, syntax in _SYNTAX.items()}

# RFC 1939 §3 limited arguments to 40 characters; RFC 2449 §4 replaces that
# with a limit on the whole command line (MAILHOST_POP3_MAX_LINE, enforced by
# the server), which long login names need.
_NUMBER = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _number(text: str, *, what: str, minimum: int) -> int:
    if not _NUMBER.fullmatch(text):
        raise CommandError(f"{what} must be a decimal number")
    value = int(text)
    if value < minimum:
        raise CommandError(f"{what} must be at least {minimum}")
    return value


def parse_command(line: bytes) -> Command:
    """Parse one command line (with or without its CRLF)."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip():
        raise CommandError("empty command")
    if _CONTROL.search(line):
        raise CommandError("control characters in command")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("command is not valid UTF-8") from None
    verb, _, rest = text.partition(" ")
    verb = verb.upper()
    syntax = _SYNTAX.get(verb)
    if syntax is None:
        raise CommandError(f"unknown command {verb[:10]!r}")
    if syntax == ("rest",):
        if not rest:
            raise CommandError(f"{verb} needs an argument")
        return Command(verb, (rest,))
    words = rest.split(" ") if rest else []
    if any(not w for w in words):
        raise CommandError("arguments are separated by one space")
    required = _REQUIRED[verb]
    if not required <= len(words) <= len(syntax):
        wanted = str(required) if required == len(syntax) else f"{required} to {len(syntax)}"
        raise CommandError(f"{verb} takes {wanted} argument(s)")
    args: list[str | int] = []
    for kind, word in zip(syntax, words, strict=False):
        kind = kind.rstrip("?")
        if kind == "n":
            args.append(_number(word, what="message number", minimum=1))
        elif kind == "lines":
            args.append(_number(word, what="line count", minimum=0))
        else:
            args.append(word)
    return Command(verb, tuple(args))


# --- SASL PLAIN (RFC 4616 §2, carried by RFC 5034) -----------------------------


def decode_sasl_plain(response: str) -> tuple[str, str, str]:
    """``apps.directory.sasl.decode_plain``, its refusal as a POP3 -ERR."""
    try:
        return decode_plain(response)
    except Invalid as error:
        raise CommandError(error.message) from None


# --- replies ---------------------------------------------------------------------


def ok(text: str = "") -> bytes:
    return (f"+OK {text}" if text else "+OK").encode("utf-8") + CRLF


def err(text: str, code: str | None = None) -> bytes:
    """-ERR with an RFC 2449 §8 extended response code when given."""
    prefix = f"[{code}] " if code else ""
    return f"-ERR {prefix}{text}".encode() + CRLF


def multiline(first: bytes, lines: list[str]) -> bytes:
    """A +OK line followed by short text lines (CAPA, LIST, UIDL), stuffed."""
    body = b"".join(
        (b"." + line.encode() if line.startswith(".") else line.encode()) + CRLF
        for line in lines
    )
    return first + body + TERMINATOR


# --- message data (RFC 1939 §3 and §11) --------------------------------------------

_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Bare LF becomes CRLF; a last line without an end gets one. Other bytes,
    8-bit ones and lone CRs included, are left as they are."""
    if data.count(b"\n") != data.count(CRLF):  # the regex is slow: only when needed
        data = _BARE_LF.sub(CRLF, data)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def wire_size(data: bytes) -> int:
    """Octets of the message as RETR sends it, before byte-stuffing: RFC 1939 §11
    counts each line end as two octets and does not count stuffed dots twice."""
    size = len(data) + data.count(b"\n") - data.count(CRLF)
    if data and not data.endswith(b"\n"):
        size += 2
    return size


def stuffed(crlf_data: bytes) -> bytes:
    """Multi-line response data: byte-stuff lines beginning with "." and add
    the terminating ".CRLF" (RFC 1939 §3). ``crlf_data`` comes from to_crlf."""
    body = crlf_data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return body + TERMINATOR


def top(crlf_data: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line and ``lines`` body lines."""
    if crlf_data.startswith(CRLF):
        body_start = 2  # an empty header section
    else:
        separator = crlf_data.find(b"\r\n\r\n")
        if separator < 0:
            return crlf_data  # no body: the whole message is header
        body_start = separator + 4
    position = body_start
    for _ in range(lines):
        line_end = crlf_data.find(CRLF, position)
        if line_end < 0:
            break
        position = line_end + 2
    return crlf_data[:position]


def uidl(uidvalidity: int, uid: int) -> str:
    """The unique-id of RFC 1939 §7 UIDL: "<uidvalidity>.<uid>".

    The store never gives a UID twice within one UIDVALIDITY (RFC 3501
    §2.3.1.1), and a folder made anew gets a new, later UIDVALIDITY, so the pair
    is never reused and stays the same for as long as the message is there.
    It is 3 to 21 characters of 0x21-0x7E, within RFC 1939's 1 to 70."""
    return f"{uidvalidity}.{uid}"
