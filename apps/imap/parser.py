"""IMAP command parser: pure functions over bytes (no I/O, no ORM, no clock).

Two steps, as the wire forces them:

- ``CommandFramer`` cuts the incoming byte stream into whole commands. A
  command is one line, or several when it carries literals (RFC 3501 §4.3):
  ``{n}`` (synchronising: the server must say "+" before the client sends the
  n octets) and ``{n+}`` (RFC 7888 LITERAL+: sent at once). The framer keeps
  the literal markers and octets in the command bytes, so that the second
  step can parse one contiguous byte string.
- ``parse_command`` turns one framed command into a ``Command`` with its tag,
  its name and arguments already checked against the command's grammar
  (RFC 3501 §9, RFC 9051 §9 and the extensions' ABNF).

Both raise ``ParseError`` (answered with a tagged BAD, the session goes on) or
``LimitError`` (answered with an untagged BYE, the connection is closed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "Command", "CommandFramer", "Continue", "FetchAtt", "ImapUrl", "LimitError", "ParseError",
    "SearchKey", "Section", "SeqSet", "TooBig", "parse_command", "parse_imap_url",
]


class ParseError(Exception):
    """Malformed command: tagged BAD (untagged when there is no usable tag)."""

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag


class LimitError(ParseError):
    """Past a limit that leaves no way to resynchronise: untagged BYE."""


class TooBig(ParseError):
    """A synchronising literal larger than allowed: refused before its octets
    are sent (RFC 7889 §3 [TOOBIG]); the session goes on."""


@dataclass(frozen=True)
class Continue:
    """The framer waits for a synchronising literal: send a continuation."""


# --- framing ---------------------------------------------------------------------

_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})(\+|-)?\}\r?\n\Z")


class CommandFramer:
    """Incremental framing of commands across reads.

    ``feed`` bytes as they arrive; ``next`` returns a whole command (bytes
    ending in CRLF), ``Continue()`` when the client waits for "+", or None
    when more input is needed."""

    def __init__(self, *, max_line: int, max_literal: int) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self._buffer = bytearray()
        self._command = bytearray()
        self._literal_left = 0
        self._line_bytes = 0  # length of the command's text outside literals
        self._continued = False  # a Continue was returned for the pending literal

    @property
    def in_command(self) -> bool:
        return bool(self._command) or self._literal_left > 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def buffered(self) -> int:
        """Octets received and not yet framed (for flow control)."""
        return len(self._buffer)

    def pending(self) -> bytes:
        """Bytes received but not yet framed (discarded at STARTTLS)."""
        return bytes(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()

    def read_line(self) -> bytes | None:
        """One raw line outside command framing (IDLE's DONE, SASL responses)."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.max_line:
                raise LimitError("line too long")
            return None
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line

    def next(self) -> bytes | Continue | None:
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self._buffer))
                if take == 0:
                    return None
                self._command += self._buffer[:take]
                del self._buffer[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if self._line_bytes + len(self._buffer) > self.max_line:
                    self._reset()
                    raise LimitError("command line too long")
                return None
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._line_bytes += len(line)
            if self._line_bytes > self.max_line:
                self._reset()
                raise LimitError("command line too long")
            self._command += line
            match = _LITERAL_AT_END.search(line)
            if match is None:
                command = bytes(self._command)
                self._reset()
                return command
            size = int(match.group(1))
            synchronising = match.group(2) != b"+"
            if size > self.max_literal:
                tag = _tag_of(bytes(self._command))
                self._reset()
                if synchronising:
                    raise TooBig(f"literal of {size} octets is larger than allowed", tag)
                raise LimitError("literal larger than allowed")
            self._literal_left = size
            if synchronising:
                return Continue()

    def _reset(self) -> None:
        self._command = bytearray()
        self._literal_left = 0
        self._line_bytes = 0


def _tag_of(command: bytes) -> str | None:
    tag = command.split(b" ", 1)[0]
    if tag and all(c in _TAG_CHARS for c in tag):
        return tag.decode("ascii")
    return None


# --- values ----------------------------------------------------------------------

# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials.
_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0x00, 0x20)) | {0x7F}
_ATOM_CHARS = frozenset(set(range(0x01, 0x80)) - _ATOM_SPECIALS)
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
_TAG_CHARS = _ASTRING_CHARS - {ord("+")}
_LIST_CHARS = _ASTRING_CHARS | {ord("%"), ord("*")}


@dataclass(frozen=True)
class SeqSet:
    """A sequence set (RFC 3501 §9 sequence-set; RFC 5182 "$").

    ``ranges`` holds (low, high) pairs where None stands for "*" (the
    largest number in use); ``saved`` is the "$" of SEARCHRES."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ascending (low, high) ranges once "*" is known (RFC 3501 §9:
        "*" is the largest number in use, and a:b is the same as b:a)."""
        out = []
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, number: int, largest: int) -> bool:
        return any(a <= number <= b for a, b in self.resolve(largest))


@dataclass(frozen=True)
class Section:
    """A BODY[section] spec (RFC 3501 §6.4.5)."""

    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def label(self) -> str:
        pieces = [".".join(map(str, self.part))] if self.part else []
        if self.text:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchAtt:
    """One FETCH data item (RFC 3501 §6.4.5; RFC 3516 BINARY; RFC 7162 MODSEQ)."""

    name: str  # FLAGS, UID, BODY, BODY.PEEK, BINARY, BINARY.PEEK, BINARY.SIZE, ...
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (origin octet, count)

    @property
    def peek(self) -> bool:
        return self.name.endswith(".PEEK")


@dataclass(frozen=True)
class SearchKey:
    """A search key: ``op`` and its arguments (e.g. ("FROM", "alice"),
    ("OR", key, key), ("AND", [keys]), ("NOT", key), ("SEQ", SeqSet))."""

    op: str
    args: tuple[Any, ...] = ()


@dataclass
class Command:
    tag: str
    name: str  # upper case; UID commands are "UID FETCH" etc.
    args: dict[str, Any] = field(default_factory=dict)


class _Cursor:
    """Recursive-descent reader over one framed command."""

    def __init__(self, data: bytes, tag: str | None = None) -> None:
        self.data = data
        self.pos = 0
        self.tag = tag

    def error(self, message: str) -> ParseError:
        return ParseError(message, self.tag)

    # -- primitives
    def peek(self, size: int = 1) -> bytes:
        return self.data[self.pos : self.pos + size]

    def at_end(self) -> bool:
        return self.data[self.pos :] in (b"\r\n", b"\n", b"")

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters at the end of the command")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def expect(self, token: bytes) -> None:
        if self.data[self.pos : self.pos + len(token)].upper() != token:
            raise self.error(f"expected {token.decode()}")
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.data[self.pos : self.pos + len(token)].upper() == token:
            self.pos += len(token)
            return True
        return False

    def _run(self, allowed: frozenset[int] | set[int]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in allowed:
            self.pos += 1
        return data[start : self.pos]

    def atom(self) -> str:
        value = self._run(_ATOM_CHARS)
        if not value:
            raise self.error("expected an atom")
        return value.decode("ascii")

    def number(self) -> int:
        value = self._run(set(b"0123456789"))
        if not value or len(value) > 20:
            raise self.error("expected a number")
        return int(value)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise self.error("expected a non-zero number")
        return value

    def number64(self) -> int:
        value = self.number()
        if value >= 2**63:
            raise self.error("number too large")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.error("unterminated quoted string")
            char = data[self.pos]
            self.pos += 1
            if char == 0x22:
                return bytes(out)
            if char == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise self.error("bad escape in quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif char in (0x0A, 0x0D, 0x00):
                raise self.error("line break in quoted string")
            else:
                out.append(char)

    def literal(self, *, allow_binary: bool = False) -> bytes:
        binary = self.accept(b"~")
        if binary and not allow_binary:
            raise self.error("literal8 not allowed here")
        self.expect(b"{")
        size = self.number()
        self.accept(b"+") or self.accept(b"-")
        self.expect(b"}")
        self.accept(b"\r")
        self.expect(b"\n")
        value = self.data[self.pos : self.pos + size]
        if len(value) != size:
            raise self.error("literal shorter than announced")
        if not binary and 0 in value:
            raise self.error("NUL in a literal")  # RFC 3501 §4.3
        self.pos += size
        return value

    def at_string(self) -> bool:
        """A quoted string or literal starts here. "~" is an ATOM-CHAR: only
        "~{" opens a literal8 (RFC 3516 §4.1), so "~foo" stays an atom."""
        return self.peek() in (b'"', b"{") or self.peek(2) == b"~{"

    def string(self) -> bytes:
        first = self.peek()
        if first == b'"':
            return self.quoted()
        if first == b"{" or self.peek(2) == b"~{":
            return self.literal()
        raise self.error("expected a string")

    def astring(self) -> bytes:
        if self.at_string():
            return self.string()
        value = self._run(_ASTRING_CHARS)
        if not value:
            raise self.error("expected an atom or string")
        return value

    def nstring(self) -> bytes | None:
        if self.peek(3).upper() == b"NIL":
            self.pos += 3
            return None
        return self.string()

    def mailbox(self) -> str:
        return _mailbox_name(self.astring(), self)

    def list_mailbox(self) -> str:
        value = self.string() if self.at_string() else self._run(_LIST_CHARS)
        return _mailbox_name(value, self)

    def paren_list(self, item: Callable[[], Any]) -> list[Any]:
        self.expect(b"(")
        items: list[Any] = []
        if self.accept(b")"):
            return items
        while True:
            items.append(item())
            if self.accept(b")"):
                return items
            self.sp()

    def flag(self) -> str:
        if self.accept(b"\\"):
            if self.accept(b"*"):
                return "\\*"
            name = self.atom()
            canonical = _SYSTEM_FLAGS.get("\\" + name.upper())
            return canonical or "\\" + name
        return self.atom()

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

    def seq_number(self) -> int | None:
        if self.accept(b"*"):
            return None
        return self.nz_number()

    def seq_set(self) -> SeqSet:
        if self.accept(b"$"):
            return SeqSet(saved=True)
        ranges = []
        while True:
            low = self.seq_number()
            high = low
            if self.accept(b":"):
                high = self.seq_number()
            ranges.append((low, high))
            if not self.accept(b","):
                return SeqSet(tuple(ranges))

    def date(self) -> date:
        quoted = self.accept(b'"')
        # RFC 3501 §9: date-month is case-insensitive ("24-mar-2007").
        text = self._run(_DATE_CHARS)
        if quoted:
            self.expect(b'"')
        match = re.fullmatch(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text)
        month = match.group(2).decode().capitalize() if match else ""
        if not match or month not in _MONTHS:
            raise self.error("expected a date like 1-Feb-2024")
        try:
            return date(int(match.group(3)), _MONTHS.index(month) + 1, int(match.group(1)))
        except ValueError:
            raise self.error("no such date") from None

    def date_time(self) -> datetime:
        value = self.quoted()
        match = re.fullmatch(
            rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", value)
        month = match.group(2).decode().capitalize() if match else ""
        if not match or month not in _MONTHS:
            raise self.error("expected a date-time like \"01-Feb-2024 10:00:00 +0000\"")
        offset = timedelta(hours=int(match.group(8)), minutes=int(match.group(9)))
        if match.group(7) == b"-":
            offset = -offset
        try:
            return datetime(
                int(match.group(3)), _MONTHS.index(month) + 1,
                int(match.group(1)), int(match.group(4)), int(match.group(5)),
                int(match.group(6)), tzinfo=timezone(offset)).astimezone(UTC)
        except ValueError:
            raise self.error("no such date-time") from None


_DATE_CHARS = frozenset(b"0123456789-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_SYSTEM_FLAGS = {name.upper(): name for name in (
    "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")}


def _mailbox_name(raw: bytes, cursor: _Cursor) -> str:
    """A mailbox name as sent: UTF-8 (RFC 6855, RFC 9051) or modified UTF-7
    (RFC 3501 §5.1.3), decoded by the session; here only its bytes are checked."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise cursor.error("mailbox name is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise cursor.error("control character in mailbox name")
    return text


# --- FETCH -----------------------------------------------------------------------

_FETCH_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_SIMPLE_FETCH = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                 "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ", "BODY", "SAVEDATE",
                 "EMAILID", "THREADID"}


def _section(cursor: _Cursor, *, binary: bool) -> Section:
    cursor.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while cursor.peek().isdigit():
        part.append(cursor.nz_number())
        if not cursor.accept(b"."):
            break
        if not cursor.peek().isdigit():
            break
    if cursor.peek() != b"]":
        if binary:
            raise cursor.error("BINARY takes only a part number")
        word = cursor._run(set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")).upper()
        if word in (b"HEADER", b"TEXT") or (word == b"MIME" and part):
            text = word.decode()
        elif word in (b"HEADER.FIELDS", b"HEADER.FIELDS.NOT"):
            text = word.decode()
            cursor.sp()
            names = cursor.paren_list(cursor.astring)
            if not names:
                raise cursor.error("HEADER.FIELDS needs at least one field name")
            fields = tuple(n.decode("ascii", "replace") for n in names)
        else:
            raise cursor.error("unknown section")
    cursor.expect(b"]")
    return Section(tuple(part), text, fields)


def _fetch_att(cursor: _Cursor) -> FetchAtt:
    word = cursor._run(set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.0123456789")
                       ).decode().upper()
    if word in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and \
            cursor.peek() == b"[":
        section = _section(cursor, binary=word.startswith("BINARY"))
        partial = None
        if cursor.accept(b"<"):
            if word == "BINARY.SIZE":
                raise cursor.error("BINARY.SIZE takes no partial")
            start = cursor.number()
            cursor.expect(b".")
            count = cursor.nz_number()
            cursor.expect(b">")
            partial = (start, count)
        return FetchAtt(word, section, partial)
    if word in _SIMPLE_FETCH:
        return FetchAtt(word)
    raise cursor.error(f"unknown FETCH item {word or cursor.peek(10)!r}")


def _fetch_args(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    seqs = cursor.seq_set()
    cursor.sp()
    atts: list[FetchAtt]
    if cursor.peek() == b"(":
        atts = cursor.paren_list(lambda: _fetch_att(cursor))
        if not atts:
            raise cursor.error("empty FETCH list")
    else:
        start = cursor.pos
        word = cursor._run(_ATOM_CHARS).decode().upper()
        if word in _FETCH_MACROS:
            atts = [FetchAtt(n) for n in _FETCH_MACROS[word]]
        else:
            cursor.pos = start
            atts = [_fetch_att(cursor)]
    modifiers: dict[str, Any] = {}
    if cursor.maybe_sp():
        # RFC 7162 §3.1.4.1 CHANGEDSINCE, RFC 7162 §3.2.6 VANISHED
        def modifier() -> None:
            name = cursor.atom().upper()
            if name == "CHANGEDSINCE":
                cursor.sp()
                modifiers["CHANGEDSINCE"] = cursor.number64()
            elif name == "VANISHED":
                modifiers["VANISHED"] = True
            else:
                raise cursor.error(f"unknown FETCH modifier {name}")

        cursor.paren_list(modifier)
    return {"seqs": seqs, "atts": atts, "modifiers": modifiers}


# --- SEARCH ----------------------------------------------------------------------

_SEARCH_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_SEARCH_NO_ARG = {"ALL", "NEW", "OLD", "RECENT"}
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def _search_key(cursor: _Cursor, charset: str, depth: int = 0) -> SearchKey:
    if depth > 100:
        raise cursor.error("search keys nested too deeply")
    if cursor.peek() == b"(":
        keys = cursor.paren_list(lambda: _search_key(cursor, charset, depth + 1))
        if not keys:
            raise cursor.error("empty search group")
        return SearchKey("AND", tuple(keys))
    if cursor.peek() in (b"*", b"$") or cursor.peek().isdigit():
        return SearchKey("SEQ", (cursor.seq_set(),))
    word = cursor.atom().upper()

    def text() -> str:
        cursor.sp()
        return _decode_search_string(cursor.astring(), charset, cursor)

    if word in _SEARCH_NO_ARG:
        return SearchKey(word)
    if word in _SEARCH_FLAG_KEYS:
        name, present = _SEARCH_FLAG_KEYS[word]
        return SearchKey("FLAG", (name, present))
    if word in ("KEYWORD", "UNKEYWORD"):
        cursor.sp()
        return SearchKey("FLAG", (cursor.atom(), word == "KEYWORD"))
    if word in _SEARCH_STRING:
        return SearchKey(word, (text(),))
    if word in _SEARCH_DATE:
        cursor.sp()
        return SearchKey(word, (cursor.date(),))
    if word == "HEADER":
        cursor.sp()
        name = cursor.astring().decode("ascii", "replace")
        return SearchKey("HEADER", (name.lower(), text()))
    if word in ("LARGER", "SMALLER"):
        cursor.sp()
        return SearchKey(word, (cursor.number64(),))
    if word == "UID":
        cursor.sp()
        return SearchKey("UID", (cursor.seq_set(),))
    if word == "NOT":
        cursor.sp()
        return SearchKey("NOT", (_search_key(cursor, charset, depth + 1),))
    if word == "OR":
        cursor.sp()
        left = _search_key(cursor, charset, depth + 1)
        cursor.sp()
        return SearchKey("OR", (left, _search_key(cursor, charset, depth + 1)))
    if word in ("YOUNGER", "OLDER"):  # RFC 5032
        cursor.sp()
        return SearchKey(word, (cursor.nz_number(),))
    if word == "MODSEQ":  # RFC 7162 §3.1.5
        cursor.sp()
        if cursor.peek() == b'"':
            cursor.quoted()  # entry name
            cursor.sp()
            cursor.atom()  # entry type: priv / shared / all
            cursor.sp()
        return SearchKey("MODSEQ", (cursor.number64(),))
    raise cursor.error(f"unknown search key {word}")


def _decode_search_string(raw: bytes, charset: str, cursor: _Cursor) -> str:
    try:
        return raw.decode("utf-8" if charset in ("UTF-8", "US-ASCII") else charset)
    except (UnicodeDecodeError, LookupError):
        raise cursor.error("search string is not valid in its charset") from None


_SEARCH_RETURN = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE", "PARTIAL"}


def _partial_range(cursor: _Cursor) -> tuple[int, int]:
    """RFC 5267 §5 partial-range: nz-number ":" nz-number, no "*"; 500:400 is
    the same as 400:500."""
    low = cursor.nz_number()
    cursor.expect(b":")
    high = cursor.nz_number()
    return min(low, high), max(low, high)


def _return_options(cursor: _Cursor, allowed: set[str]) -> dict[str, Any]:
    """An optional ``RETURN (options) `` of SEARCH or SORT: ``return`` is None
    without one (RFC 4731 §3: RETURN () means RETURN (ALL)); ``partial`` the
    range of PARTIAL (RFC 5267 §4.4: one PARTIAL or one ALL at most);
    ``update_fetch`` what to FETCH of messages joining an UPDATE result."""
    if not cursor.accept(b"RETURN "):
        return {"return": None, "partial": None, "update_fetch": ()}
    partial = None
    update_fetch: list[FetchAtt] = []

    def option() -> str:
        nonlocal partial
        name = cursor.atom().upper()
        if name not in allowed:
            raise cursor.error(f"unknown RETURN option {name}")
        if name == "PARTIAL":
            cursor.sp()
            partial = _partial_range(cursor)
        elif name == "UPDATE" and b"(" in (cursor.peek(), cursor.peek(2)[1:]):
            # RFC 5465 §8: modifier-update = "UPDATE" ["(" fetch-att *(SP fetch-att) ")"],
            # written with a space before the list in §7's example: either is taken.
            cursor.accept(b" ")
            update_fetch.extend(cursor.paren_list(lambda: _fetch_att(cursor)))
        return name

    options = cursor.paren_list(option)
    if len(options) != len(set(options)) or {"ALL", "PARTIAL"} <= set(options):
        raise cursor.error("a RETURN option twice, or both ALL and PARTIAL")
    cursor.sp()
    return {"return": options or ["ALL"], "partial": partial,
            "update_fetch": tuple(update_fetch)}


def _search_program(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    returns = _return_options(cursor, _SEARCH_RETURN)
    charset = "US-ASCII"
    if cursor.accept(b"CHARSET "):
        charset = cursor.astring().decode("ascii", "replace").upper()
        cursor.sp()
    return {**_search_keys(cursor, charset), **returns}


def _search_keys(cursor: _Cursor, charset: str) -> dict[str, Any]:
    result: dict[str, Any] = {"charset": charset}
    if charset not in ("UTF-8", "US-ASCII"):
        result["bad_charset"] = charset
    keys = [_search_key(cursor, charset)]
    while cursor.maybe_sp():
        keys.append(_search_key(cursor, charset))
    result["key"] = keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    return result


# --- commands --------------------------------------------------------------------


def _no_args(cursor: _Cursor) -> dict[str, Any]:
    return {}


def _login(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    user = cursor.astring()
    cursor.sp()
    return {"user": user, "password": cursor.astring()}


def _authenticate(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    mechanism = cursor.atom().upper()
    initial = None
    if cursor.maybe_sp():
        # RFC 4959: SASL-IR, "=" stands for an empty response
        initial = cursor._run(set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  b"0123456789+/="))
        if not initial:
            raise cursor.error("bad initial response")
    return {"mechanism": mechanism, "initial": initial}


def _select(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    args: dict[str, Any] = {"mailbox": cursor.mailbox(), "condstore": False, "qresync": None}
    if cursor.maybe_sp():
        def param() -> None:
            name = cursor.atom().upper()
            if name == "CONDSTORE":  # RFC 7162 §3.1.8
                args["condstore"] = True
            elif name == "QRESYNC":  # RFC 7162 §3.2.5
                cursor.sp()
                cursor.expect(b"(")
                uidvalidity = cursor.nz_number()
                cursor.sp()
                modseq = cursor.number64()
                known = None
                match = None
                if cursor.maybe_sp():
                    if cursor.peek() != b"(":
                        known = cursor.seq_set()
                        cursor.maybe_sp()
                    if cursor.peek() == b"(":
                        cursor.expect(b"(")
                        seqs = cursor.seq_set()
                        cursor.sp()
                        uids = cursor.seq_set()
                        cursor.expect(b")")
                        match = (seqs, uids)
                cursor.expect(b")")
                args["qresync"] = (uidvalidity, modseq, known, match)
            else:
                raise cursor.error(f"unknown SELECT parameter {name}")

        cursor.paren_list(param)
    return args


def _mailbox_arg(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    return {"mailbox": cursor.mailbox()}


def _create(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    args: dict[str, Any] = {"mailbox": cursor.mailbox(), "use": None}
    if cursor.maybe_sp():
        # RFC 6154 §3: CREATE name (USE (\Drafts))
        def param() -> None:
            name = cursor.atom().upper()
            if name != "USE":
                raise cursor.error(f"unknown CREATE parameter {name}")
            cursor.sp()
            uses = cursor.flag_list()
            args["use"] = uses

        cursor.paren_list(param)
    return args


def _rename(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    old = cursor.mailbox()
    cursor.sp()
    return {"mailbox": old, "new": cursor.mailbox()}


_LIST_SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}


def _list(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5258 §6: LIST [(selection-options)] reference (patterns) [RETURN (options)]
    cursor.sp()
    selection: list[str] = []
    if cursor.peek() == b"(":
        selection = [o.upper() for o in cursor.paren_list(cursor.atom)]
        # RFC 5258 §3: options the server does not know are BAD, and so is
        # RECURSIVEMATCH alone or with only REMOTE (§3.1).
        unknown = set(selection) - _LIST_SELECTION
        if unknown:
            raise cursor.error(f"unknown selection option {sorted(unknown)[0]}")
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            raise cursor.error("RECURSIVEMATCH needs another selection option")
        cursor.sp()
    reference = cursor.mailbox()
    cursor.sp()
    if cursor.peek() == b"(":
        patterns = cursor.paren_list(cursor.list_mailbox)
    else:
        patterns = [cursor.list_mailbox()]
    returns: list[str] = []
    status_items: list[str] = []
    if cursor.maybe_sp():
        cursor.expect(b"RETURN ")

        def option() -> str:
            name = cursor.atom().upper()
            if name not in _LIST_RETURN:
                raise cursor.error(f"unknown return option {name}")  # RFC 5258 §3
            if name == "STATUS":  # RFC 5819
                cursor.sp()
                status_items.extend(i.upper() for i in cursor.paren_list(cursor.atom))
            return name

        returns = cursor.paren_list(option)
    return {"selection": selection, "reference": reference, "patterns": patterns,
            "returns": returns, "status": status_items}


def _lsub(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    reference = cursor.mailbox()
    cursor.sp()
    return {"selection": ["SUBSCRIBED"], "reference": reference,
            "patterns": [cursor.list_mailbox()], "returns": [], "status": [], "lsub": True}


_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ",
                 "SIZE", "DELETED", "APPENDLIMIT"}


def _status(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    mailbox = cursor.mailbox()
    cursor.sp()
    items = [i.upper() for i in cursor.paren_list(cursor.atom)]
    unknown = set(items) - _STATUS_ITEMS
    if unknown or not items:
        raise cursor.error(f"unknown STATUS item {sorted(unknown)[0] if unknown else '()'}")
    return {"mailbox": mailbox, "items": items}


def _append(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    mailbox = cursor.mailbox()
    messages = []
    # RFC 3502 MULTIAPPEND: several messages in one command.
    while cursor.maybe_sp():
        flags: list[str] = []
        when = None
        if cursor.peek() == b"(":
            flags = cursor.flag_list()
            cursor.sp()
        if cursor.peek() == b'"':
            when = cursor.date_time()
            cursor.sp()
        catenate = None
        data = b""
        if cursor.accept(b"CATENATE ("):  # RFC 4469 §5
            catenate = _catenate_parts(cursor)
        elif cursor.accept(b"UTF8 ("):  # RFC 6855 §4
            data = cursor.literal(allow_binary=True)
            cursor.expect(b")")
        else:
            data = cursor.literal(allow_binary=True)
        messages.append({"flags": flags, "date": when, "data": data, "catenate": catenate})
    if not messages:
        raise cursor.error("APPEND needs a message")
    return {"mailbox": mailbox, "messages": messages}


def _catenate_parts(cursor: _Cursor) -> list[tuple[str, bytes]]:
    """RFC 4469 §5: cat-part *(SP cat-part) ")", each ("TEXT", octets) or
    ("URL", the URL as sent)."""
    parts: list[tuple[str, bytes]] = []
    while True:
        if cursor.accept(b"TEXT "):
            parts.append(("TEXT", cursor.literal(allow_binary=True)))
        elif cursor.accept(b"URL "):
            parts.append(("URL", cursor.astring()))
        else:
            raise cursor.error("expected TEXT or URL")
        if cursor.accept(b")"):
            return parts
        cursor.sp()


@dataclass(frozen=True)
class ImapUrl:
    """A message (part) named by an IMAP URL (RFC 5092 §3) of this user."""

    mailbox: str
    uidvalidity: int | None
    uid: int
    section: Section
    partial: tuple[int, int | None] | None
    # RFC 5092 §3: the enc-user of an absolute URL, the login it belongs to.
    user: str | None = None


_URL = re.compile(
    rb"(?:imap://(?:(?P<user>[^@/;]*)(?:;AUTH=[^@/]*)?@)?[^@/]*)?/(?P<mailbox>[^;/?]+(?:/[^;/?]+)*)(?:;UIDVALIDITY=(?P<uidvalidity>\d+))?"
    rb"/;UID=(?P<uid>\d+)(?:/;SECTION=(?P<section>[^/;]+))?"
    rb"(?:/;PARTIAL=(?P<origin>\d+)(?:\.(?P<length>\d+))?)?", re.IGNORECASE)


def parse_imap_url(url: bytes) -> ImapUrl:
    """An IMAP URL as CATENATE takes it (RFC 4469 §3, RFC 5092 §3): a message
    or section of the user's own folders; the mailbox and section are
    percent-encoded UTF-8. ValueError when it is not one."""
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError("not an IMAP message URL")
    section = Section()
    if match["section"]:
        cursor = _Cursor(b"[" + unquote_to_bytes(match["section"]) + b"]")
        try:
            section = _section(cursor, binary=False)
        except ParseError as error:
            raise ValueError(error.message) from None
        if not cursor.at_end():
            raise ValueError("bad section")
    partial = None
    if match["origin"] is not None:
        length = int(match["length"]) if match["length"] is not None else None
        partial = (int(match["origin"]), length)
    return ImapUrl(
        mailbox=unquote_to_bytes(match["mailbox"]).decode("utf-8"),
        uidvalidity=int(match["uidvalidity"]) if match["uidvalidity"] else None,
        uid=int(match["uid"]), section=section, partial=partial,
        user=unquote_to_bytes(match["user"]).decode("utf-8") if match["user"] else None)


def _store(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    seqs = cursor.seq_set()
    cursor.sp()
    unchanged_since = None
    if cursor.peek() == b"(":
        def modifier() -> None:
            nonlocal unchanged_since
            name = cursor.atom().upper()
            if name != "UNCHANGEDSINCE":
                raise cursor.error(f"unknown STORE modifier {name}")
            cursor.sp()
            unchanged_since = cursor.number64()

        cursor.paren_list(modifier)
        cursor.sp()
    item = cursor._run(set(b"+-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")).upper()
    match = re.fullmatch(rb"([+-]?)FLAGS(\.SILENT)?", item)
    if not match:
        raise cursor.error("expected FLAGS, +FLAGS or -FLAGS")
    cursor.sp()
    if cursor.peek() == b"(":
        flags = cursor.flag_list()
    else:
        flags = [cursor.flag()]
        while cursor.maybe_sp():
            flags.append(cursor.flag())
    mode = {b"+": "add", b"-": "remove", b"": "replace"}[match.group(1)]
    return {"seqs": seqs, "mode": mode, "silent": bool(match.group(2)), "flags": flags,
            "unchanged_since": unchanged_since}


def _copy(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    seqs = cursor.seq_set()
    cursor.sp()
    return {"seqs": seqs, "mailbox": cursor.mailbox()}


def _uid_expunge(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    return {"seqs": cursor.seq_set()}


def _enable(cursor: _Cursor) -> dict[str, Any]:
    names = []
    while cursor.maybe_sp():
        names.append(cursor.atom().upper())
    if not names:
        raise cursor.error("ENABLE needs a capability")
    return {"capabilities": names}


def _id(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    if cursor.accept(b"NIL"):
        return {"params": None}
    values = cursor.paren_list(cursor.nstring)
    if len(values) % 2:
        raise cursor.error("ID needs field and value pairs")
    return {"params": values}


def _quota_root(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    return {"root": cursor.astring().decode("utf-8", "replace")}


def _setquota(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    root = cursor.astring()
    cursor.sp()
    cursor.paren_list(lambda: cursor.atom() + (cursor.sp() or "") + str(cursor.number64()))
    return {"root": root.decode("utf-8", "replace")}


def _getmetadata(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5464 §5: GETMETADATA [(MAXSIZE n DEPTH d)] mailbox (entry ...) | entry
    cursor.sp()
    args: dict[str, Any] = {"maxsize": None, "depth": "0"}
    if cursor.peek() == b"(":
        def option() -> None:
            name = cursor.atom().upper()
            cursor.sp()
            if name == "MAXSIZE":
                args["maxsize"] = cursor.number()
            elif name == "DEPTH":
                depth = cursor.atom().lower()
                if depth not in ("0", "1", "infinity"):
                    raise cursor.error("DEPTH is 0, 1 or infinity")
                args["depth"] = depth
            else:
                raise cursor.error(f"unknown GETMETADATA option {name}")

        cursor.paren_list(option)
        cursor.sp()
    args["mailbox"] = cursor.mailbox()
    cursor.sp()
    entry = lambda: cursor.astring().decode("utf-8", "replace")  # noqa: E731
    args["entries"] = cursor.paren_list(entry) if cursor.peek() == b"(" else [entry()]
    if not args["entries"]:
        raise cursor.error("no entry names")
    return args


def _setmetadata(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5464 §5: SETMETADATA mailbox (entry value ...); value is nstring or literal8.
    cursor.sp()
    mailbox = cursor.mailbox()
    cursor.sp()

    def pair() -> tuple[str, bytes | None]:
        entry = cursor.astring().decode("utf-8", "replace")
        cursor.sp()
        if cursor.peek(2) == b"~{":
            return entry, cursor.literal(allow_binary=True)
        return entry, cursor.nstring()

    values = cursor.paren_list(pair)
    if not values:
        raise cursor.error("no entries to set")
    return {"mailbox": mailbox, "values": values}


# RFC 5256 §3 and RFC 5957 §3 (SORT=DISPLAY)
_SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
              "DISPLAYTO"}
# RFC 5267 §3.2 ESORT, §4 CONTEXT=SORT
_SORT_RETURN = {"MIN", "MAX", "ALL", "COUNT", "CONTEXT", "UPDATE", "PARTIAL"}


def _sort(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5256 §3: SORT [RETURN (options)] (sort-criteria) charset search-key...
    cursor.sp()
    # RFC 5267 §3.2: ESORT's options.
    returns = _return_options(cursor, _SORT_RETURN)
    words = [w.upper() for w in cursor.paren_list(cursor.atom)]
    criteria: list[tuple[str, bool]] = []
    reverse = False
    for word in words:
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in _SORT_KEYS:
            raise cursor.error(f"unknown sort key {word}")
        criteria.append((word, reverse))
        reverse = False
    if not criteria or reverse:
        raise cursor.error("bad sort criteria")
    cursor.sp()
    charset = cursor.astring().decode("ascii", "replace").upper()
    cursor.sp()
    return {"criteria": criteria, **returns, **_search_keys(cursor, charset)}


def _thread(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5256 §3: THREAD algorithm charset search-key...
    cursor.sp()
    algorithm = cursor.atom().upper()
    cursor.sp()
    charset = cursor.astring().decode("ascii", "replace").upper()
    cursor.sp()
    return {"algorithm": algorithm, "return": None, "partial": None,
            **_search_keys(cursor, charset)}


def _cancelupdate(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5267 §5: "CANCELUPDATE" 1*(SP quoted)
    tags = []
    while cursor.maybe_sp():
        tags.append(cursor.quoted().decode("ascii", "replace"))
    if not tags:
        raise cursor.error("CANCELUPDATE needs the tag of a search")
    return {"tags": tags}


@dataclass(frozen=True)
class EventGroup:
    """One event-group of NOTIFY SET (RFC 5465 §8): a mailbox filter (SELECTED,
    SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES), its
    mailbox names, the events (canonical spelling when known; none for
    NONE) and MessageNew's FETCH attributes."""

    filter: str
    mailboxes: tuple[str, ...]
    events: tuple[str, ...]
    fetch: tuple[FetchAtt, ...] = ()


_NOTIFY_EVENTS = {name.upper(): name for name in (
    "MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
    "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")}
_NOTIFY_FILTERS = {"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED",
                   "SUBTREE", "MAILBOXES"}


def _event_group(cursor: _Cursor) -> EventGroup:
    cursor.expect(b"(")
    name = cursor.atom().upper()
    if name not in _NOTIFY_FILTERS:
        raise cursor.error(f"unknown mailbox filter {name}")
    mailboxes: list[str] = []
    if name in ("SUBTREE", "MAILBOXES"):
        cursor.sp()
        mailboxes = cursor.paren_list(cursor.mailbox) if cursor.peek() == b"(" else \
            [cursor.mailbox()]
    cursor.sp()
    events: list[str] = []
    fetch: list[FetchAtt] = []
    if cursor.peek() == b"(":
        def event() -> None:
            word = cursor.atom()
            events.append(_NOTIFY_EVENTS.get(word.upper(), word))
            if events[-1] == "MessageNew" and cursor.peek(2) == b" (":
                cursor.sp()
                fetch.extend(cursor.paren_list(lambda: _fetch_att(cursor)))

        cursor.paren_list(event)
        if not events:
            raise cursor.error("empty event list")
    elif cursor.atom().upper() != "NONE":
        raise cursor.error("expected events or NONE")
    cursor.expect(b")")
    return EventGroup(name, tuple(mailboxes), tuple(events), tuple(fetch))


def _notify(cursor: _Cursor) -> dict[str, Any]:
    # RFC 5465 §8: NOTIFY SET [STATUS] event-groups / NOTIFY NONE
    cursor.sp()
    word = cursor.atom().upper()
    if word == "NONE":
        return {"groups": None, "status": False}
    if word != "SET":
        raise cursor.error("expected SET or NONE")
    cursor.sp()
    status = cursor.accept(b"STATUS ")
    groups = [_event_group(cursor)]
    while cursor.maybe_sp():
        groups.append(_event_group(cursor))
    return {"groups": groups, "status": status}


def _genurlauth(cursor: _Cursor) -> dict[str, Any]:
    # RFC 4467 §9: "GENURLAUTH" 1*(SP url-rump SP mechanism)
    pairs = []
    while cursor.maybe_sp():
        url = cursor.astring()
        cursor.sp()
        pairs.append((url, cursor.atom().upper()))
    if not pairs:
        raise cursor.error("GENURLAUTH needs a URL and a mechanism")
    return {"urls": pairs}


_URLFETCH_PARAMS = {"BODYPARTSTRUCTURE", "BINARY", "BODY"}


def _urlfetch(cursor: _Cursor) -> dict[str, Any]:
    # RFC 4467 §9: "URLFETCH" 1*(SP url-full); RFC 5524 §4: or
    # "(" url-full *(SP ("BODYPARTSTRUCTURE" / "BINARY" / "BODY")) ")"
    fetches: list[tuple[bytes, tuple[str, ...] | None]] = []
    while cursor.maybe_sp():
        if not cursor.accept(b"("):
            fetches.append((cursor.astring(), None))
            continue
        url = cursor.astring()
        params: list[str] = []
        while cursor.maybe_sp():
            name = cursor.atom().upper()
            if name not in _URLFETCH_PARAMS or name in params:
                raise cursor.error(f"bad URLFETCH parameter {name}")
            params.append(name)
        cursor.expect(b")")
        if {"BINARY", "BODY"} <= set(params):
            raise cursor.error("BINARY and BODY exclude each other")
        fetches.append((url, tuple(params)))
    if not fetches:
        raise cursor.error("URLFETCH needs a URL")
    return {"urls": fetches}


def _resetkey(cursor: _Cursor) -> dict[str, Any]:
    # RFC 4467 §9: "RESETKEY" [SP mailbox *(SP mechanism)]
    if not cursor.maybe_sp():
        return {"mailbox": None, "mechanisms": []}
    mailbox = cursor.mailbox()
    mechanisms = []
    while cursor.maybe_sp():
        mechanisms.append(cursor.atom().upper())
    return {"mailbox": mailbox, "mechanisms": mechanisms}


def _compress(cursor: _Cursor) -> dict[str, Any]:
    cursor.sp()
    return {"mechanism": cursor.atom().upper()}


_ARGS: dict[str, Callable[[_Cursor], dict[str, Any]]] = {
    "CAPABILITY": _no_args, "NOOP": _no_args, "LOGOUT": _no_args, "STARTTLS": _no_args,
    "LOGIN": _login, "AUTHENTICATE": _authenticate,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_arg,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_arg, "UNSUBSCRIBE": _mailbox_arg,
    "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "CHECK": _no_args, "CLOSE": _no_args, "UNSELECT": _no_args, "EXPUNGE": _no_args,
    "SEARCH": _search_program, "FETCH": _fetch_args, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "IDLE": _no_args, "ENABLE": _enable, "ID": _id, "NAMESPACE": _no_args,
    "GETQUOTA": _quota_root, "GETQUOTAROOT": _mailbox_arg, "SETQUOTA": _setquota,
    "COMPRESS": _compress, "SORT": _sort, "THREAD": _thread,
    "GETMETADATA": _getmetadata, "SETMETADATA": _setmetadata,
    "CANCELUPDATE": _cancelupdate, "NOTIFY": _notify,
    "GENURLAUTH": _genurlauth, "URLFETCH": _urlfetch, "RESETKEY": _resetkey,
}
_UID_COMMANDS = {"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"}


def parse_command(data: bytes) -> Command:
    """Parse one framed command (as returned by ``CommandFramer.next``)."""
    cursor = _Cursor(data)
    tag_bytes = cursor._run(_TAG_CHARS)
    if not tag_bytes:
        raise ParseError("missing or invalid tag")
    tag = tag_bytes.decode("ascii")
    cursor.tag = tag
    cursor.sp()
    name = cursor._run(set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."
                           )).decode().upper()
    if not name:
        raise cursor.error("missing command name")
    if name == "UID":
        cursor.sp()
        sub = cursor.atom().upper()
        if sub not in _UID_COMMANDS:
            raise cursor.error(f"UID {sub} is not a UID command")
        args = _uid_expunge(cursor) if sub == "EXPUNGE" else _ARGS[sub](cursor)
        name = f"UID {sub}"
    else:
        parse = _ARGS.get(name)
        if parse is None:
            raise cursor.error(f"unknown command {name[:40]}")
        args = parse(cursor)
    cursor.end()
    return Command(tag, name, args)
