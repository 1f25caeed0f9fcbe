"""MIME analysis of a stored message, computed once at delivery time.

`analyze(raw)` returns everything an IMAP server needs to answer FETCH ENVELOPE,
BODYSTRUCTURE and BODY[section] later without parsing the message again: the envelope,
a tree of parts with byte offsets into `raw`, and decoded header texts for search.
`extract_text(raw)` returns the readable text of the body for the full-text index, and
`find_part(structure, section)` maps an IMAP section number to a part of the tree.

The module is pure: bytes in, JSON-serialisable values out, no I/O, no Django. It is
written for hostile input: every function here returns a value for any bytes, in time
linear in their length. Headers and boundaries are parsed by hand over bytes because
the stdlib `email` package rewrites what it parses and loses the offsets.

Line breaks are LF or CRLF; a CR before an LF belongs to the line break. Offsets are
byte offsets into `raw`; a part's MIME header block is `raw[header_start:body_start]`
(including the blank line that ends it) and its body is `raw[body_start:body_end]`.

Choices made on broken input (each is also commented where it is made):
- A header block ends at the first empty line. A message with no empty line is all
  header with an empty body. If the very first line of an entity is neither a header
  field nor an mbox "From " line, the entity has no header and its body starts there.
  Lines without a colon inside a header block are skipped, not joined to the field
  above (a body that runs into the headers must not become a 3 MB Subject).
- A multipart with no usable boundary, or whose boundary never opens a part, is served
  as one text/plain leaf over its body, so that the client still shows its bytes.
- A multipart or message/rfc822 part nested deeper than MAX_DEPTH, or met after
  MAX_PARTS parts, or a message/rfc822 with a transfer encoding (its inner offsets
  would not point into `raw`), is served as an application/octet-stream leaf. So a part
  has children exactly when its type is multipart, and has `message` exactly when it is
  message/rfc822 or message/global: formatters can rely on that.
- An address without a domain gets host "" (not None): RFC 3501 §7.4.2 reads a NIL
  host as the start of a group.
- Only multipart/digest children default to message/rfc822 (RFC 2046 §5.1.5); an
  encapsulated message, like any message, defaults to text/plain (RFC 2045 §5.2).

Deliberately not done:
- RFC 2047 words are not decoded in the envelope or in parameter values (IMAP sends
  them raw and clients decode them); RFC 2231 parameter values are decoded.
- No uuencode, BinHex, TNEF, S/MIME or PGP decoding; attachments other than text/plain
  and text/html are not turned into text; message/partial is not reassembled.
- A CR alone is not a line break.
- A boundary line followed by anything but whitespace is not a delimiter (RFC 2046
  §5.1.1 allows only whitespace there), so "--b--junk" does not close "b".
"""

from __future__ import annotations

import binascii
import html
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "MessageInfo",
    "address_list",
    "after_first_field",
    "analyze",
    "decode_body",
    "extract_text",
    "find_part",
    "has_attachment",
    "header_text",
    "html_to_text",
    "is_attachment",
    "leaf_parts",
    "starts_with_field",
    "text_leaves",
    "with_fields_inserted",
]

logger = logging.getLogger(__name__)

Part = dict[str, Any]
Address = list[str | None]

# Nesting of multiparts and encapsulated messages beyond this is served as one opaque
# leaf; it also bounds recursion (about two frames a level).
MAX_DEPTH = 100
# Parts beyond this many in one message are not split out (the last part keeps the
# rest), so a message of a million empty parts costs no more than a normal one.
MAX_PARTS = 10_000

_UTF8_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_WSP = b" \t"

_MESSAGE_TYPES = {("message", "rfc822"), ("message", "global")}
# RFC 2046 §5.2.1: an encapsulated message must not be encoded; if it is anyway, its
# bytes are not in `raw` as they are and it cannot be parsed in place.
_REAL_ENCODINGS = {"base64", "quotedprintable", "xuuencode", "uuencode", "xuue"}


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageInfo:
    envelope: list  # IMAP ENVELOPE fields, RFC 3501 §7.4.2 order
    bodystructure: dict  # root part
    subject: str  # RFC 2047-decoded, unfolded ("" if absent)
    from_text: str  # decoded header texts for search ("" if absent)
    to_text: str
    cc_text: str
    bcc_text: str
    message_id: str  # "<abc@x>" or ""
    in_reply_to: str
    references: list[str]
    date: datetime | None  # timezone-aware; None if absent or unparseable


def analyze(raw: bytes) -> MessageInfo:
    """Compute envelope, body structure and search fields of `raw`. Never raises."""
    raw = bytes(raw)
    try:
        return _analyze(raw)
    except Exception:  # last line of defence, see below
        # A parser bug must not make a message undeliverable or unreadable: log it
        # with its traceback and serve the message as one opaque text part.
        logger.exception("MIME analysis failed for a %d-byte message", len(raw))
        return _fallback_info(raw)


def extract_text(raw: bytes, *, limit: int = 1_000_000) -> str:
    """Readable body text of `raw` for full-text search, at most `limit` characters.

    Decoded text/plain parts and text/html parts with tags stripped, in message order;
    of a multipart/alternative only one alternative (the plain one when there is one).
    Header fields are not included: they are indexed separately. Never raises.
    """
    raw = bytes(raw)
    if limit <= 0:
        return ""
    try:
        return _extract_text(raw, limit)
    except Exception:  # same reasoning as in analyze()
        logger.exception("text extraction failed for a %d-byte message", len(raw))
        return ""


def text_leaves(
    raw: bytes, *, limit: int = 1_000_000
) -> tuple[list[tuple[str, bytes]], dict, list[tuple[dict, str]]]:
    """The header fields of `raw` (lowercased names, unfolded raw values, in
    order), its body structure, and each of its text/plain and text/html
    leaves with its decoded text, HTML markup kept (for what the markup says:
    links, forms, hidden text), every alternative, at most `limit` characters
    in all: what a classifier reads, from one pass of the parser. Never
    raises: a message that cannot be parsed has no fields and no leaves."""
    raw = bytes(raw)
    try:
        fields, root = _parse_entity(raw, 0, len(raw), 0, ("text", "plain"), _Budget())
        leaves: list[tuple[dict, str]] = []
        budget = limit
        for _section, part in leaf_parts(root):
            if budget <= 0:
                break
            if part["type"] != "text" or part["subtype"] not in ("plain", "html"):
                continue  # not decoded: an attachment's bytes are no text
            start, end = part["body_start"], part["body_end"]
            # No more bytes than the remaining characters can come from
            # (quoted-printable of 4-byte UTF-8 is at most 12 bytes a character).
            end = min(end, start + budget * 12 + 16)
            data = _decode_transfer(raw[start:end], part["encoding"])
            text = _decode_bytes(data, _param(part["params"], "charset") or None)[:budget]
            budget -= len(text)
            leaves.append((part, text))
    except Exception:  # same reasoning as in analyze()
        logger.exception("text leaves failed for a %d-byte message", len(raw))
        return [], _fallback_info(raw).bodystructure, []
    return fields, root, leaves


def address_list(value: bytes) -> list[tuple[str, str, str]]:
    """(display name, local part, domain) of each address in a header value
    (From, To, …), names with RFC 2047 words decoded; "" where a part is
    missing. Group names are no addresses and are left out."""
    return [(_decode_2047(name or ""), mailbox or "", host)
            for name, _adl, mailbox, host in _addresses(value) or ()
            if host is not None]


def header_text(value: bytes) -> str:
    """A raw header value as a reader sees it: UTF-8 (RFC 6532), else
    Latin-1, RFC 2047 words decoded."""
    return _decode_2047(_to_text(value))


def html_to_text(text: str) -> str:
    """The readable text of an HTML document: script, style and comments
    dropped, one line per block, entities decoded."""
    return _html_to_text(text)


def find_part(structure: dict, section: list[int]) -> dict | None:
    """The part at an IMAP section number (RFC 3501 §6.4.5), or None if there is none.

    `structure` is a message's root part. [] is the whole message. The top-level
    message and every message/rfc822 part have a body whose parts are numbered from 1:
    the children if that body is multipart, else the body itself as part 1.
    """
    node: Part | None = structure
    # The root part is the body of an implicit message: start as if descending into it.
    children = _message_children(structure)
    for number in section:
        if not isinstance(number, int) or number < 1 or number > len(children):
            return None
        node = children[number - 1]
        children = _children(node)
    return node


def leaf_parts(structure: dict) -> list[tuple[list[int], dict]]:
    """The leaves of a message's body in message order, each with its IMAP
    section number (as `find_part` takes it). An encapsulated message
    (message/rfc822) is one leaf: its own parts belong to it."""
    out: list[tuple[list[int], Part]] = []

    def walk(children: list[Part], path: list[int]) -> None:
        for number, child in enumerate(children, 1):
            if child.get("parts"):
                walk(child["parts"], [*path, number])
            else:
                out.append(([*path, number], child))

    walk(_message_children(structure), [])
    return out


_LONE_LF = re.compile(rb"(?<!\r)\n")


def with_crlf(raw: bytes) -> bytes:
    """``raw`` with every line ending in CRLF (files keep LF; the store, SMTP
    and IMAP use CRLF)."""
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r\n")  # every LF is lone: no pattern to run
    return _LONE_LF.sub(b"\r\n", raw)


def starts_with_field(raw: bytes) -> bool:
    """Whether ``raw`` opens with a header field (no mbox "From " line, no
    byte order mark, no continuation, not a body without a header)."""
    end = raw.find(b"\n")
    line = raw if end < 0 else raw[:end]
    return bool(line) and line[0] not in _WSP and _split_field(line.rstrip(b"\r")) is not None


def after_first_field(raw: bytes) -> int | None:
    """The offset just after the first header field of ``raw`` (its folded
    lines included), where header fields can be inserted so that they join
    the message's header and move every later offset by their length and
    nothing else (``with_fields_inserted``); None when ``raw`` does not open
    with a header field or that field's lines do not end in CRLF."""
    if not starts_with_field(raw):
        return None
    position = 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0 or raw[end - 1:end] != b"\r":
            return None
        position = end + 1
        if raw[position:position + 1] not in (b" ", b"\t"):
            return position


def with_fields_inserted(structure: dict, at: int, added: int) -> dict:
    """The structure ``analyze`` gives for ``raw[:at] + fields + raw[at:]``
    from the one it gave for ``raw``, where ``at`` is ``after_first_field(raw)``
    and ``fields`` is ``added`` bytes of complete CRLF-ended header fields that
    are neither Content-* nor envelope fields: every offset from ``at`` on
    moves. A new tree; ``structure`` is left as it is."""
    if not added:
        return structure

    def moved(part: Part) -> Part:
        copy = dict(part)
        for key in ("header_start", "body_start", "body_end"):
            if copy[key] >= at:
                copy[key] += added
        copy["parts"] = [moved(child) for child in part.get("parts") or []]
        if part.get("message"):
            copy["message"] = dict(part["message"],
                                   bodystructure=moved(part["message"]["bodystructure"]))
        return copy

    return moved(structure)


def _param(params: list[list[str]] | None, name: str) -> str:
    return next((value for key, value in params or () if key.lower() == name), "")


def is_attachment(part: dict) -> bool:
    """Whether a leaf is a file for the reader to save rather than body text
    to show (RFC 2183): declared as an attachment, or named, or not text,
    except an inline part referenced by Content-ID (an image in the HTML)."""
    disposition = part.get("disposition") or ["", []]
    if disposition[0].lower() == "attachment":
        return True
    if part.get("id") and part["type"] != "text":
        return False
    named = _param(disposition[1], "filename") or _param(part.get("params"), "name")
    return bool(named) or part["type"] != "text"


def has_attachment(structure: dict) -> bool:
    return any(is_attachment(part) for _section, part in leaf_parts(structure))


def part_bytes(raw: bytes, part: dict) -> bytes:
    """A part's body with its transfer encoding undone: what the sender attached."""
    data = raw[part["body_start"]:part["body_end"]]
    decoded = decode_body(data, part["encoding"])
    return data if decoded is None else decoded


def decode_text(decoded: bytes, part: dict) -> str:
    """A text part's body, its transfer encoding already undone (``part_bytes``),
    as str in its charset; an unknown charset falls back to UTF-8 with
    replacement characters."""
    charset = _param(part["params"], "charset").strip().strip("\"'") or "utf-8"
    if charset.lower() in ("us-ascii", "ascii"):
        charset = "utf-8"  # undeclared 8-bit text is usually UTF-8
    try:
        return decoded.decode(charset, "replace")
    except (LookupError, ValueError):
        return decoded.decode("utf-8", "replace")


def part_filename(part: dict) -> str:
    """The file name a part declares (Content-Disposition filename, else
    Content-Type name), RFC 2047 words decoded; "" when it declares none."""
    disposition = part.get("disposition") or ["", []]
    name = _param(disposition[1], "filename") or _param(part.get("params"), "name")
    return decode_words(name) if name else ""


def decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded, as a reader sees them (a display name
    in the envelope, a file name)."""
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word: take it as it came
        return text


# ---------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------


class _Budget:
    """Parts still allowed in this message (see MAX_PARTS)."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = MAX_PARTS


def _analyze(raw: bytes) -> MessageInfo:
    fields, root = _parse_entity(raw, 0, len(raw), 0, ("text", "plain"), _Budget())
    first = _first_fields(fields)
    envelope = _envelope(first)

    def decoded(name: str) -> str:
        value = first.get(name)
        return _decode_2047(_to_text(value)).strip() if value is not None else ""

    message_ids = _msg_ids(first.get("references"))
    return MessageInfo(
        envelope=envelope,
        bodystructure=root,
        subject=decoded("subject"),
        from_text=decoded("from"),
        to_text=decoded("to"),
        cc_text=decoded("cc"),
        bcc_text=decoded("bcc"),
        message_id=_first_msg_id(first.get("message-id")),
        in_reply_to=_first_msg_id(first.get("in-reply-to")),
        references=message_ids,
        date=_parse_date(first.get("date")),
    )


def _fallback_info(raw: bytes) -> MessageInfo:
    part = _leaf_part("text", "plain", [["charset", "us-ascii"]], 0, 0, len(raw))
    part["lines"] = _count_lines(raw, 0, len(raw))
    return MessageInfo(
        envelope=[None] * 10,
        bodystructure=part,
        subject="",
        from_text="",
        to_text="",
        cc_text="",
        bcc_text="",
        message_id="",
        in_reply_to="",
        references=[],
        date=None,
    )


def _leaf_part(
    ctype: str,
    subtype: str,
    params: list[list[str]],
    header_start: int,
    body_start: int,
    body_end: int,
) -> Part:
    return {
        "type": ctype,
        "subtype": subtype,
        "params": params,
        "id": None,
        "description": None,
        "encoding": "7bit",
        "size": body_end - body_start,
        "lines": None,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": header_start,
        "body_start": body_start,
        "body_end": body_end,
        "parts": [],
        "message": None,
    }


def _parse_entity(
    raw: bytes,
    start: int,
    end: int,
    depth: int,
    default_type: tuple[str, str],
    budget: _Budget,
) -> tuple[list[tuple[str, bytes]], Part]:
    """Parse the entity (message or body part) at raw[start:end].

    Returns its header fields (for the envelope, when it is a message) and its part.
    """
    budget.remaining -= 1
    fields, body_start = _parse_header(raw, start, end)
    first = _first_fields(fields)

    ctype, subtype, params, boundary = _content_type(first.get("content-type"), default_type)
    part = _leaf_part(ctype, subtype, params, start, body_start, end)
    part["id"] = _text(first.get("content-id"))
    part["description"] = _text(first.get("content-description"))
    part["md5"] = _text(first.get("content-md5"))
    part["location"] = _text(first.get("content-location"))
    part["encoding"] = _encoding(first.get("content-transfer-encoding"))
    part["disposition"] = _disposition(first.get("content-disposition"))
    part["language"] = _language(first.get("content-language"))

    can_nest = depth < MAX_DEPTH and budget.remaining > 0
    if ctype == "multipart":
        ranges = (
            _split_multipart(raw, body_start, end, boundary, budget.remaining)
            if can_nest and boundary
            else []
        )
        if ranges:
            # RFC 2046 §5.1.5: in a digest, parts default to message/rfc822.
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            part["parts"] = [
                _parse_entity(raw, s, e, depth + 1, child_default, budget)[1] for s, e in ranges
            ]
        elif can_nest:
            # No boundary, or it never opens a part: IMAP cannot describe a multipart
            # without children, so serve the body as text the client can display.
            part["type"], part["subtype"] = "text", "plain"
            _ensure_charset(part["params"])
        else:
            _make_opaque(part)
    elif (ctype, subtype) in _MESSAGE_TYPES:
        if can_nest and _encoding_key(part["encoding"]) not in _REAL_ENCODINGS:
            inner_fields, inner = _parse_entity(
                raw, body_start, end, depth + 1, ("text", "plain"), budget
            )
            part["message"] = {
                "envelope": _envelope(_first_fields(inner_fields)),
                "bodystructure": inner,
            }
        else:
            _make_opaque(part)

    # RFC 3501 §7.4.2: body-fld-lines for text/* and message/rfc822 (RFC 9051 §7.5.2
    # adds message/global).
    if part["type"] == "text" or (part["type"], part["subtype"]) in _MESSAGE_TYPES:
        part["lines"] = _count_lines(raw, body_start, end)
    return fields, part


def _make_opaque(part: Part) -> None:
    # Served as a leaf: a multipart or message type would promise children or an
    # envelope that we deliberately did not parse.
    part["type"], part["subtype"] = "application", "octet-stream"


def _count_lines(raw: bytes, start: int, end: int) -> int:
    # Line breaks, as Dovecot counts them: a part's last line before its
    # boundary gives its CRLF to the boundary (RFC 2046 §5.1.1), so "hello"
    # there is 0 lines, and a body of three broken lines is 3.
    return raw.count(b"\n", start, end) if end > start else 0


def _split_multipart(
    raw: bytes, start: int, end: int, boundary: bytes, max_parts: int
) -> list[tuple[int, int]]:
    """Byte ranges of the body parts of the multipart body raw[start:end].

    RFC 2046 §5.1.1: a delimiter line is "--" boundary, optionally "--" for the close
    delimiter, optional whitespace, then the line break; the line break *before* it
    belongs to the delimiter. Preamble and epilogue are not parts. If the close
    delimiter is missing, the last part runs to `end`.
    """
    needle = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        found = raw.find(needle, pos, end)
        if found < 0:
            break
        pos = found + 1
        if found != start and raw[found - 1] != _LF:
            continue  # not at the start of a line
        after = found + len(needle)
        close = raw.startswith(b"--", after) and after + 2 <= end
        rest = after + 2 if close else after
        newline = raw.find(b"\n", rest, end)
        line_stop = end if newline < 0 else newline
        if raw[rest:line_stop].strip(b" \t\r"):
            continue  # e.g. a longer boundary that starts with ours (a nested one)
        next_line = end if newline < 0 else newline + 1
        if part_start is not None:
            if not close and len(ranges) + 1 >= max_parts:
                ranges.append((part_start, end))  # budget spent: this part keeps the rest
                return ranges
            part_end = found
            if part_end > part_start and raw[part_end - 1] == _LF:
                part_end -= 1
                if part_end > part_start and raw[part_end - 1] == _CR:
                    part_end -= 1
            ranges.append((part_start, part_end))
        if close:
            if part_start is not None:
                return ranges
            # A close delimiter before any part opened is ignored: keep looking.
            continue
        part_start = next_line
        pos = next_line
    if part_start is not None:
        ranges.append((part_start, end))  # no close delimiter: the last part runs to the end
    return ranges


# ---------------------------------------------------------------------------
# Header block
# ---------------------------------------------------------------------------

# RFC 5322 §2.2: a field name is printable US-ASCII except ":".
_FIELD_NAME = re.compile(rb"[!-9;-~]+")


def _split_field(line: bytes) -> tuple[str, bytes] | None:
    colon = line.find(b":")
    if colon <= 0:
        return None
    # RFC 5322 §4.5.2 (obsolete syntax): whitespace may come before the colon.
    name = line[:colon].rstrip(_WSP)
    if not _FIELD_NAME.fullmatch(name):
        return None
    return name.decode("ascii").lower(), line[colon + 1 :]


def _parse_header(raw: bytes, start: int, end: int) -> tuple[list[tuple[str, bytes]], int]:
    """Header fields of the header block at raw[start:end] and the offset of the body.

    Values are unfolded (RFC 5322 §2.2.3: the line break before WSP is removed, the WSP
    kept) but otherwise raw bytes.
    """
    fields: list[tuple[str, list[bytes]]] = []
    current: list[bytes] | None = None
    pos = start
    while pos < end:
        newline = raw.find(b"\n", pos, end)
        if newline < 0:
            stop = next_line = end
        else:
            stop, next_line = newline, newline + 1
            if stop > pos and raw[stop - 1] == _CR:
                stop -= 1
        if stop == pos and newline >= 0:
            # RFC 5322 §2.1: an empty line separates the header from the body.
            return _join_fields(fields), next_line
        line = raw[pos:stop]
        if pos == start and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM) :]  # some Windows tools prefix one; it is no header
            if not line:
                pos = next_line
                continue
        if line[0] in _WSP:
            if current is not None:
                current.append(line)  # folded continuation
            else:
                # Continuation with nothing to continue (" From: x" as first line):
                # take it as a field if it reads as one, else ignore it.
                field = _split_field(line.lstrip(_WSP))
                if field is not None:
                    current = [field[1]]
                    fields.append((field[0], current))
        else:
            field = _split_field(line)
            if field is not None:
                current = [field[1]]
                fields.append((field[0], current))
            elif pos == start and line.startswith(b"From "):
                current = None  # mbox separator line before the header: part of no field
            elif fields:
                current = None  # a stray line inside the header: skipped
            else:
                # The entity starts with something that is not a header at all: it has
                # no header and this is its body (RFC 2046 §5.1.1 would require a
                # blank line first, but bodies without one are common enough).
                return [], pos
        pos = next_line
    # No empty line: everything is header and the body is empty.
    return _join_fields(fields), end


def _join_fields(fields: list[tuple[str, list[bytes]]]) -> list[tuple[str, bytes]]:
    return [(name, b"".join(pieces)) for name, pieces in fields]


def _first_fields(fields: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """The first occurrence of each field: the one that counts when a field repeats."""
    first: dict[str, bytes] = {}
    for name, value in fields:
        first.setdefault(name, value)
    return first


def _to_text(value: bytes) -> str:
    # RFC 6532: header fields may carry UTF-8; anything else is taken as Latin-1 so
    # that every byte survives.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _fix_latin1(text: str) -> str:
    """Re-decode a string that was decoded as Latin-1 for parsing, as _to_text would."""
    if text.isascii():
        return text
    return _to_text(text.encode("latin-1", "replace"))


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return _to_text(value.strip(b" \t\r\n"))


# ---------------------------------------------------------------------------
# MIME header fields
# ---------------------------------------------------------------------------

# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# A run of characters between semicolons, where a quoted string may hold semicolons.
_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^;"])+', re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_COMMENT = re.compile(r"\([^()]*\)")
# RFC 2231 §3 and §4: name*, name*0, name*0*
_EXTENDED_NAME = re.compile(r"([^*]+)\*(?:(\d{1,4})(\*)?)?")


def _parse_mime_value(value: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split `type/subtype; a=b; c="d"` into its lowercased main value and raw params.

    Works on the Latin-1 reading of the bytes so that offsets and bytes survive;
    parameter names are lowercased, values unquoted but otherwise raw.
    """
    segments = _SEGMENT.findall(value.decode("latin-1"))
    if not segments:
        return "", []
    main = _COMMENT.sub(" ", segments[0]).strip()
    rest = segments[1:]
    # A missing semicolon (`text/plain charset=utf-8`): the words after the first are
    # read as one more parameter.
    words = main.split(None, 1)
    if len(words) == 2 and "=" in words[1]:
        main, rest = words[0], [words[1], *rest]
    params: list[tuple[str, str]] = []
    for segment in rest:
        name, eq, val = segment.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        val = val.strip()
        if val.startswith('"'):
            match = _QUOTED.match(val)
            inner = match.group(1) if match else val[1:]
            # Unescape only \" and \\: Windows paths in filenames keep their backslashes.
            val = _ESCAPED_QUOTE_OR_BACKSLASH.sub(r"\1", inner)
        else:
            val = _strip_trailing_comment(val)
        params.append((name, val))
    return main.lower(), params


_ESCAPED_QUOTE_OR_BACKSLASH = re.compile(r'\\(["\\])')


def _strip_trailing_comment(value: str) -> str:
    # RFC 2045 §5.1 example: `charset=us-ascii (Plain text)`. Only a comment after
    # whitespace is removed: `name=Invoice_(1234).pdf` is a real unquoted value.
    if not value.endswith(")"):
        return value
    opening = value.rfind("(")
    if opening > 0 and value[opening - 1].isspace() and ")" not in value[opening:-1]:
        return value[:opening].rstrip()
    return value


def _decode_params(raw_params: list[tuple[str, str]]) -> list[list[str]]:
    """Parameters as [name, value] pairs with RFC 2231 sections joined and decoded.

    The first occurrence of a name wins; an RFC 2231 form of a name wins over its plain
    form (senders give both for old readers). Order is that of first appearance.
    """
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    order: list[str] = []
    for name, value in raw_params:
        match = _EXTENDED_NAME.fullmatch(name)
        if match:
            base = match.group(1)
            if match.group(2) is None:
                index, extended = 0, True  # name*=charset'lang'value (RFC 2231 §4)
            else:
                index, extended = int(match.group(2)), match.group(3) is not None
            sections.setdefault(base, {}).setdefault(index, (value, extended))
        else:
            base = name
            plain.setdefault(base, value)
        if base not in order:
            order.append(base)
    result: list[list[str]] = []
    for base in order:
        if base in sections:
            result.append([base, _join_rfc2231(sections[base])])
        else:
            result.append([base, _fix_latin1(plain[base])])
    return result


def _join_rfc2231(sections: dict[int, tuple[str, bool]]) -> str:
    """RFC 2231 §3/§4: join continuation sections and decode charset'lang'%XX values."""
    charset: str | None = None
    data = bytearray()
    for position, index in enumerate(sorted(sections)):
        value, extended = sections[index]
        if extended:
            if position == 0 and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            data += unquote_to_bytes(value)
        else:
            data += value.encode("latin-1", "replace")
    if charset:
        return _decode_bytes(bytes(data), charset)
    return _to_text(bytes(data))


def _ensure_charset(params: list[list[str]]) -> None:
    # RFC 2045 §5.2: text defaults to charset=us-ascii.
    if not any(name == "charset" for name, _value in params):
        params.insert(0, ["charset", "us-ascii"])


def _content_type(
    value: bytes | None, default: tuple[str, str]
) -> tuple[str, str, list[list[str]], bytes]:
    """Type, subtype, decoded params and raw boundary bytes of a Content-Type value."""
    main, raw_params = _parse_mime_value(value) if value is not None else ("", [])
    if not main and not raw_params:
        ctype, subtype = default  # absent or empty: the context's default
    else:
        ctype, _slash, subtype = main.partition("/")
        ctype, subtype = ctype.strip(), subtype.strip()
        if not (_TOKEN.fullmatch(ctype) and _TOKEN.fullmatch(subtype)):
            # RFC 2045 §5.2: a syntactically invalid Content-Type means text/plain.
            # Its parameters are kept: a name= or charset= still helps the reader.
            ctype, subtype = "text", "plain"
    params = _decode_params(raw_params)
    if ctype == "text":
        _ensure_charset(params)
    boundary = b""
    for name, raw_value in raw_params:
        if name == "boundary":
            # Raw bytes, not the decoded value: the delimiter must match byte for byte.
            # Trailing whitespace is allowed after a delimiter anyway (RFC 2046 §5.1.1).
            boundary = raw_value.encode("latin-1", "replace").rstrip(b" \t")
            break
    return ctype, subtype, params, boundary


def _encoding(value: bytes | None) -> str:
    """Content-Transfer-Encoding, lowercased; 7bit when absent (RFC 2045 §6.1)."""
    if value is None:
        return "7bit"
    text = _COMMENT.sub(" ", value.decode("latin-1")).split(";", 1)[0].strip().lower()
    return _fix_latin1(text) or "7bit"


def _disposition(value: bytes | None) -> list | None:
    """RFC 2183 Content-Disposition as [type, [[name, value], ...]], None if unusable."""
    if value is None:
        return None
    main, raw_params = _parse_mime_value(value)
    if not _TOKEN.fullmatch(main):
        return None
    return [main, _decode_params(raw_params)]


def _language(value: bytes | None) -> list[str] | None:
    """RFC 3282 Content-Language: a comma-separated list of tags."""
    if value is None:
        return None
    text = _COMMENT.sub(" ", _to_text(value))
    tags = [tag.strip() for tag in text.split(",") if tag.strip()]
    return tags or None


# ---------------------------------------------------------------------------
# Envelope (RFC 3501 §7.4.2)
# ---------------------------------------------------------------------------


def _envelope(first: dict[str, bytes]) -> list:
    from_ = _addresses(first.get("from"))
    return [
        _text(first.get("date")),
        _text(first.get("subject")),
        from_,
        # RFC 3501 §7.4.2: sender and reply-to default to from when absent or empty.
        _addresses(first.get("sender")) or from_,
        _addresses(first.get("reply-to")) or from_,
        _addresses(first.get("to")),
        _addresses(first.get("cc")),
        _addresses(first.get("bcc")),
        _text(first.get("in-reply-to")),
        _text(first.get("message-id")),
    ]


# Tokens of an RFC 5322 §3.4 address list. Comments are handled by hand (they nest).
_ADDRESS_TOKEN = re.compile(
    r"""
    (?P<ws>[\s]+)
    |(?P<qs>"(?P<qtext>(?:[^"\\]|\\.)*)"?)
    |(?P<dlit>\[(?:[^\[\]\\]|\\.)*\]?)
    |(?P<special>[,:;<>@])
    |(?P<comment>\()
    |(?P<atom>[^\s"\[(,:;<>@]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+(?:\.[^.\s]+)*")

_Token = tuple[str, str]  # (kind, text): kind is "qs", "dlit", "atom", "comment" or a special


def _address_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, size = 0, len(text)
    while pos < size:
        match = _ADDRESS_TOKEN.match(text, pos)
        if match is None:  # cannot happen: every character starts some token
            break
        kind = match.lastgroup or "atom"
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "comment":
            # RFC 5322 §3.2.2: comments nest and may hold quoted pairs.
            depth, begin = 1, pos
            while pos < size and depth:
                char = text[pos]
                if char == "\\":
                    pos += 1
                elif char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                pos += 1
            tokens.append(("comment", text[begin : pos - 1 if not depth else pos]))
        elif kind == "qs":
            tokens.append(("qs", _QUOTED_PAIR.sub(r"\1", match.group("qtext"))))
        elif kind == "special":
            tokens.append((match.group(), match.group()))
        else:
            tokens.append((kind, match.group()))
    return tokens


def _phrase(tokens: list[_Token]) -> str:
    return " ".join(text for kind, text in tokens if kind in ("atom", "qs"))


def _local_part(tokens: list[_Token]) -> str:
    words: list[str] = []
    for kind, text in tokens:
        if kind == "qs":
            # Keep the quotes a local part needs, so that mailbox@host is an address.
            if not _DOT_ATOM.fullmatch(text):
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            words.append(text)
        elif kind in ("atom", "dlit"):
            words.append(text)
    # Obsolete syntax allows "john . doe": glue words that meet at a dot.
    joined = ""
    for word in words:
        if joined and not joined.endswith(".") and not word.startswith("."):
            joined += " "
        joined += word
    return joined


def _addr_spec(tokens: list[_Token]) -> tuple[str, str]:
    """(mailbox, host) of an addr-spec; host is "" when there is no domain."""
    at = max((i for i, (kind, _text) in enumerate(tokens) if kind == "@"), default=-1)
    if at < 0:
        return _local_part(tokens), ""
    domain = "".join(text for kind, text in tokens[at + 1 :] if kind in ("atom", "dlit"))
    return _local_part(tokens[:at]), domain


def _mailbox(name: str | None, adl: str | None, mailbox: str, host: str) -> Address:
    return [
        _fix_latin1(name) if name is not None else None,
        _fix_latin1(adl) if adl is not None else None,
        _fix_latin1(mailbox),
        _fix_latin1(host),
    ]


# The part of one address field that is parsed, as Postfix keeps at most
# header_size_limit (100 KiB) of a header: some 5,000 addresses. The rest of a
# longer field (only made to cost us time: ~1 µs of CPU per octet) is left out
# of ENVELOPE and of the addresses SEARCH finds; the stored message keeps it.
MAX_ADDRESS_FIELD = 100 * 1024


def _addresses(value: bytes | None) -> list[Address] | None:
    """RFC 3501 §7.4.2 address list of a header value, or None if empty or absent.

    Lenient as mail readers are: a missing ">" or ";" is supplied, empty entries are
    skipped, and an addr-spec with a comment and no phrase takes the comment as name.
    """
    if value is None:
        return None
    if len(value) > MAX_ADDRESS_FIELD:
        # Whole addresses only: up to the last separator within the limit.
        value = value[: max(value.rfind(b",", 0, MAX_ADDRESS_FIELD), 0)]
    tokens = _address_tokens(value.decode("latin-1"))
    result: list[Address] = []
    in_group = False
    pos, size = 0, len(tokens)
    while pos < size:
        kind = tokens[pos][0]
        if kind == ",":
            pos += 1
            continue
        if kind == ";":
            if in_group:
                result.append([None, None, None, None])  # end of group marker
                in_group = False
            pos += 1
            continue
        stop = pos
        while stop < size and tokens[stop][0] not in (",", ";", ":", "<"):
            stop += 1
        collected = tokens[pos:stop]
        delimiter = tokens[stop][0] if stop < size else ""
        if delimiter == ":" and not in_group:
            # RFC 3501 §7.4.2: start of group marker carries the group name as mailbox.
            result.append([None, None, _fix_latin1(_phrase(collected)), None])
            in_group = True
            pos = stop + 1
            continue
        if delimiter == "<":
            close = stop + 1
            while close < size and tokens[close][0] != ">":
                close += 1
            inner = [t for t in tokens[stop + 1 : close] if t[0] != "comment"]
            adl: str | None = None
            colon = max((i for i, t in enumerate(inner) if t[0] == ":"), default=-1)
            if colon >= 0:
                # RFC 5322 §4.4 obsolete route: "<@a,@b:user@c>"
                adl = "".join(text for _kind, text in inner[:colon]) or None
                inner = inner[colon + 1 :]
            mailbox, host = _addr_spec(inner)
            name = _phrase(collected) or None
            result.append(_mailbox(name, adl, mailbox, host))
            # A missing "," after ">" ("A <a@x> B <b@x>") just starts the next address.
            pos = close + 1
            continue
        words = [t for t in collected if t[0] != "comment"]
        if words:
            comments = [text.strip() for kind, text in collected if kind == "comment"]
            mailbox, host = _addr_spec(words)
            name = next((c for c in reversed(comments) if c), None)
            result.append(_mailbox(name, None, mailbox, host))
        # A ":" inside a group (nested groups are not allowed) is skipped like a ",".
        pos = stop + 1 if delimiter == ":" else stop
    if in_group:
        result.append([None, None, None, None])  # unterminated group: close it
    return result or None


_WHITESPACE = re.compile(rb"\s+")
_MSG_ID = re.compile(rb"<[^<>]*>")


def _first_msg_id(value: bytes | None) -> str:
    if value is None:
        return ""
    match = _MSG_ID.search(value)
    if match is None:
        return _to_text(value.strip())  # not in angle brackets: keep what is there
    return _to_text(_WHITESPACE.sub(b"", match.group()))


def _msg_ids(value: bytes | None) -> list[str]:
    if value is None:
        return []
    return [_to_text(_WHITESPACE.sub(b"", m)) for m in _MSG_ID.findall(value)]


def _parse_date(value: bytes | None) -> datetime | None:
    """RFC 5322 §3.3 date-time (obsolete forms too), timezone-aware; None if unusable."""
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(_to_text(value).strip())
    except Exception:  # a stdlib helper: any failure means "no date"
        return None
    if parsed.tzinfo is None:
        # RFC 5322 §3.3: -0000 means "no information about the local zone": take UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# ---------------------------------------------------------------------------
# Decoding: RFC 2047 words, charsets, transfer encodings
# ---------------------------------------------------------------------------

# RFC 2047 §2: =?charset?encoding?encoded-text?= (no spaces or "?" inside).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")

# Labels that are really a superset in practice (as in the WHATWG Encoding Standard).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "unicode-1-1-utf-7": "utf-7",
}
_ASCII_LABELS = {"", "us-ascii", "ascii", "us", "ansi_x3.4-1968", "iso646-us", "646"}


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in a declared charset; unknown charsets fall back to UTF-8."""
    label = (charset or "").strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    if label in _ASCII_LABELS:
        # Undeclared or "us-ascii" 8-bit text is usually UTF-8, else Windows-1252.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")
    try:
        return data.decode(label, "replace")
    except Exception:  # LookupError, or a codec that rejects "replace"
        return data.decode("utf-8", "replace")


def _decode_word(encoding: str, text: str) -> bytes | None:
    try:
        encoded = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "qQ":
        return binascii.a2b_qp(encoded, header=True)  # RFC 2047 §4.2: "_" is a space
    return _decode_base64(encoded)


def decode_header_text(text: str) -> str:
    """RFC 2047 encoded words in a header text (a display name, say) decoded."""
    return _decode_2047(text)


def _decode_2047(text: str) -> str:
    """Decode RFC 2047 encoded words in an (unstructured) header text."""
    if "=?" not in text:
        return text
    # Pieces are plain text or (charset, bytes); adjacent words in one charset are
    # joined before decoding, as senders split multi-byte characters across words.
    pieces: list[str | tuple[str, bytes]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        data = _decode_word(match.group(2), match.group(3))
        if data is None:
            continue  # not decodable: stays as literal text
        between = text[pos : match.start()]
        after_word = bool(pieces) and isinstance(pieces[-1], tuple)
        # RFC 2047 §6.2: whitespace between two encoded words is not displayed.
        if between and not (after_word and not between.strip(" \t\r\n")):
            pieces.append(between)
        # RFC 2231 §5: an encoded word's charset may carry "*language".
        charset = match.group(1).split("*", 1)[0].lower()
        previous = pieces[-1] if pieces else None
        if isinstance(previous, tuple) and previous[0] == charset:
            pieces[-1] = (charset, previous[1] + data)
        else:
            pieces.append((charset, data))
        pos = match.end()
    pieces.append(text[pos:])
    return "".join(
        piece if isinstance(piece, str) else _decode_bytes(piece[1], piece[0]) for piece in pieces
    )


# "=" is kept: it ends a chunk (some senders concatenate separately padded chunks).
_NOT_BASE64 = bytes(
    c
    for c in range(256)
    if c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
)


def _decode_base64(data: bytes) -> bytes:
    """Lenient base64: junk characters are dropped, missing padding is supplied."""
    decoded: list[bytes] = []
    for chunk in data.translate(None, _NOT_BASE64).split(b"="):
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]  # a lone trailing character carries no whole byte
        if chunk:
            try:
                decoded.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4)))
            except (binascii.Error, ValueError):
                continue
    return b"".join(decoded)


def _encoding_key(encoding: str) -> str:
    # Compare without separators: "quoted printable" and "Quoted_Printable" are seen.
    return _ENCODING_SEPARATORS.sub("", encoding)


_ENCODING_SEPARATORS = re.compile(r"[\s_-]")


_IDENTITY_ENCODINGS = {"7bit", "8bit", "binary"}


def leaves_bytes_as_they_are(encoding: str) -> bool:
    """Whether a Content-Transfer-Encoding is one that leaves the body's
    bytes as they are (RFC 2045 §6.2), as ``decode_body`` reads its name."""
    return _encoding_key(encoding.lower()) in _IDENTITY_ENCODINGS


def decode_body(data: bytes, encoding: str) -> bytes | None:
    """A part's body with its Content-Transfer-Encoding undone (IMAP BINARY,
    RFC 3516), or None for an encoding this module does not know."""
    name = _encoding_key(encoding.lower())
    if name not in _IDENTITY_ENCODINGS | {"base64", "quotedprintable"}:
        return None
    return _decode_transfer(data, name)


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    name = _encoding_key(encoding)
    if name == "base64":
        return _decode_base64(data)
    if name == "quotedprintable":
        return _decode_quoted_printable(data)
    return data  # 7bit, 8bit, binary, and encodings we do not know


_LINE_BREAK = re.compile(rb"\r?\n")


def _decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7: trailing whitespace on a line is padding (rule 3) and
    goes; a line ending in "=" (after that whitespace) is a soft break (rule 5);
    hard line breaks come out as CRLF."""
    lines = _LINE_BREAK.split(data)
    out = []
    for index, line in enumerate(lines):
        line = line.rstrip(b" \t")
        last = index == len(lines) - 1
        if line.endswith(b"="):
            out.append(binascii.a2b_qp(line[:-1]))
        else:
            out.append(binascii.a2b_qp(line) + (b"" if last else b"\r\n"))
    return b"".join(out)


# ---------------------------------------------------------------------------
# Search text
# ---------------------------------------------------------------------------


def _extract_text(raw: bytes, limit: int) -> str:
    _fields, root = _parse_entity(raw, 0, len(raw), 0, ("text", "plain"), _Budget())
    out: list[str] = []
    _collect_text(raw, root, out, [limit])
    return "\n".join(out)[:limit]


def _collect_text(raw: bytes, part: Part, out: list[str], budget: list[int]) -> None:
    """Append the text of `part` to `out` while budget[0] characters remain."""
    if budget[0] <= 0:
        return
    if part["parts"]:
        children = part["parts"]
        if part["subtype"] == "alternative":
            # RFC 2046 §5.1.4: alternatives say the same thing; index one of them,
            # the plain one if there is one, else the first that yields text.
            plain = [c for c in children if (c["type"], c["subtype"]) == ("text", "plain")]
            for child in plain or children:
                before = len(out)
                _collect_text(raw, child, out, budget)
                if len(out) > before:
                    return
            return
        for child in children:
            _collect_text(raw, child, out, budget)
        return
    if part["message"] is not None:
        _collect_text(raw, part["message"]["bodystructure"], out, budget)
        return
    if part["type"] != "text" or part["subtype"] not in ("plain", "html"):
        return
    start, end = part["body_start"], part["body_end"]
    if part["subtype"] == "plain":
        # No need to decode more bytes than the remaining characters can come from
        # (quoted-printable of 4-byte UTF-8 is at most 12 bytes a character). HTML is
        # not cut: its markup is no text, and a cut script would hide what follows.
        end = min(end, start + budget[0] * 12 + 16)
    data = _decode_transfer(raw[start:end], part["encoding"])
    charset = next((value for name, value in part["params"] if name == "charset"), None)
    text = _decode_bytes(data, charset)
    text = _html_to_text(text) if part["subtype"] == "html" else text.replace("\r\n", "\n")
    text = text.strip()
    if text:
        text = text[: budget[0]]
        out.append(text)
        budget[0] -= len(text) + 1


_HIDDEN_START = re.compile(r"<(script|style)\b|<!--", re.IGNORECASE)
_HIDDEN_END = {
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
}
_COMMENT_END = re.compile(r"-->")
_BLOCK_TAG = re.compile(
    r"<(?:br|p|div|tr|li|h[1-6]|table|blockquote|pre|hr|/p|/div|/tr|/li|/h[1-6]"
    r"|/table|/blockquote|/pre)\b[^<>]*>",
    re.IGNORECASE,
)
_CELL_TAG = re.compile(r"</?t[dh]\b[^<>]*>", re.IGNORECASE)
# `[^<>]*` rather than `.*?`: a "<" never starts a scan to the end of a huge text.
_TAG = re.compile(r"</?[A-Za-z!?][^<>]*>")
# Runs of spaces and tabs, but not a single space (most of them), which would
# be replaced by itself at a cost.
_SPACES = re.compile(r" [ \t\r\f\v\xa0]+|[\t\r\f\v\xa0][ \t\r\f\v\xa0]*")
# html.unescape turns "&#<digits>" into an int: thousands of digits would raise.
_HUGE_CHARREF = re.compile(r"&#(?:[xX][0-9a-fA-F]{9,}|[0-9]{9,})")


def _html_to_text(text: str) -> str:
    # Drop script, style and comments first: their content is not text. A block with
    # no end swallows the rest, as a browser would.
    kept: list[str] = []
    pos = 0
    while True:
        match = _HIDDEN_START.search(text, pos)
        if match is None:
            break
        kept.append(text[pos : match.start()])
        tag = match.group(1)
        end_pattern = _HIDDEN_END[tag.lower()] if tag else _COMMENT_END
        end = end_pattern.search(text, match.end())
        pos = len(text) if end is None else end.end()
    kept.append(text[pos:])
    text = "".join(kept)
    text = _BLOCK_TAG.sub("\n", text)
    text = _CELL_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    text = html.unescape(_HUGE_CHARREF.sub("\ufffd", text))
    text = _SPACES.sub(" ", text)
    # One line per block; empty lines carry nothing for search.
    stripped = (line.strip() for line in text.split("\n"))
    return "\n".join(line for line in stripped if line)


# ---------------------------------------------------------------------------
# Section numbers
# ---------------------------------------------------------------------------


def _message_children(body: Part) -> list[Part]:
    # RFC 3501 §6.4.5: a message whose body is not multipart has only a part 1.
    return body["parts"] if body.get("parts") else [body]


def _children(node: Part) -> list[Part]:
    if node.get("parts"):
        return node["parts"]
    message = node.get("message")
    if message is not None:
        return _message_children(message["bodystructure"])
    return []
