"""IMAP response formatters: pure functions from values to bytes.

ENVELOPE and BODYSTRUCTURE are built from the JSON that apps.store.mime
computed at delivery; section texts are cut from the stored bytes with the
offsets recorded there. Mailbox names go out in modified UTF-7 (RFC 3501
§5.1.3) unless the client enabled UTF8=ACCEPT (RFC 6855).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from apps.store import mime
from apps.store.textindex import header_lines

__all__ = [
    "astring", "body_structure", "envelope", "flag_list", "header_fields", "header_lines",
    "internal_date", "literal", "mutf7_decode", "mutf7_encode", "nstring", "quoted",
    "section_bytes", "string",
]

_QUOTABLE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}
_ATOM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       b"!#&'+,-./:;<=>?@^_`|~")


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quoted(value: str | bytes) -> bytes:
    data = _bytes(value)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: str | bytes) -> bytes:
    data = _bytes(value)
    return b"{%d}\r\n" % len(data) + data


def string(value: str | bytes) -> bytes:
    """A quoted string when the value allows it (RFC 3501 §4.3), else a literal."""
    data = _bytes(value)
    if len(data) < 1024 and all(c in _QUOTABLE or c in (0x22, 0x5C) for c in data):
        return quoted(data)
    return literal(data)


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    data = _bytes(value)
    if data and all(c in _ATOM_SAFE for c in data) and data.upper() != b"NIL":
        return data
    return string(data)


def flag_list(names: Iterable[str]) -> bytes:
    return b"(" + " ".join(names).encode("utf-8") + b")"


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def internal_date(value: datetime) -> bytes:
    """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz"."""
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f'"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
            f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} '
            f'{sign}{minutes // 60:02d}{minutes % 60:02d}"').encode()


# --- ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2) ---------------------------------


def _address_list(addresses: list | None) -> bytes:
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(
        b"(" + b" ".join(nstring(v) for v in address) + b")" for address in addresses) + b")"


def envelope(value: list) -> bytes:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = value
    return b"(" + b" ".join([
        nstring(date), nstring(subject), _address_list(from_), _address_list(sender),
        _address_list(reply_to), _address_list(to), _address_list(cc), _address_list(bcc),
        nstring(in_reply_to), nstring(message_id),
    ]) + b")"


def _params(params: list[list[str]] | None) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(n.upper()) + b" " + string(v) for n, v in params) + b")"


def _disposition(value: list | None) -> bytes:
    if not value:
        return b"NIL"
    return b"(" + string(value[0].upper()) + b" " + _params(value[1]) + b")"


def _language(value: list[str] | None) -> bytes:
    if not value:
        return b"NIL"
    if len(value) == 1:
        return string(value[0])
    return b"(" + b" ".join(string(v) for v in value) + b")"


def body_structure(part: dict[str, Any], *, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (extended) or BODY (without extension data)."""
    if part["parts"]:
        out = b"(" + b"".join(body_structure(p, extended=extended) for p in part["parts"])
        out += b" " + string(part["subtype"].upper())
        if extended:
            out += b" " + b" ".join([
                _params(part["params"]), _disposition(part["disposition"]),
                _language(part["language"]), nstring(part["location"])])
        return out + b")"
    fields = [
        string(part["type"].upper()), string(part["subtype"].upper()), _params(part["params"]),
        nstring(part["id"]), nstring(part["description"]), string(part["encoding"].upper()),
        b"%d" % part["size"],
    ]
    message = part.get("message")
    if message is not None:
        fields += [envelope(message["envelope"]),
                   body_structure(message["bodystructure"], extended=extended)]
    if part["lines"] is not None and (part["type"] == "text" or message is not None):
        fields.append(b"%d" % part["lines"])
    if extended:
        fields += [nstring(part["md5"]), _disposition(part["disposition"]),
                   _language(part["language"]), nstring(part["location"])]
    return b"(" + b" ".join(fields) + b")"


# --- sections (RFC 3501 §6.4.5) --------------------------------------------------


def header_fields(block: bytes, names: Sequence[str], *, exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the chosen fields and the blank line."""
    wanted = {n.lower() for n in names}
    kept = [raw for name, raw in header_lines(block) if (name in wanted) != exclude]
    return b"".join(raw if raw.endswith(b"\n") else raw + b"\r\n" for raw in kept) + b"\r\n"


def section_bytes(raw: bytes, structure: dict[str, Any], part: Sequence[int], text: str,
                  fields: Sequence[str] = ()) -> bytes | None:
    """The octets of BODY[part.text]; None when the part does not exist."""
    if not part:
        node, message = structure, structure
    else:
        found = mime.find_part(structure, list(part))
        if found is None:
            return None
        node = found
        inner = found.get("message")
        message = inner["bodystructure"] if inner else None
    if text == "":
        if not part:
            return raw
        return raw[node["body_start"]:node["body_end"]]
    if text == "MIME":
        return raw[node["header_start"]:node["body_start"]]
    if message is None:
        # HEADER/TEXT of a part that is not message/rfc822 (RFC 3501 §6.4.5).
        return None
    if text == "TEXT":
        return raw[message["body_start"]:message["body_end"]]
    block = raw[message["header_start"]:message["body_start"]]
    if text == "HEADER":
        return block
    return header_fields(block, fields, exclude=text == "HEADER.FIELDS.NOT")


# --- modified UTF-7 (RFC 3501 §5.1.3) -------------------------------------------


def mutf7_encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def mutf7_decode(name: str) -> str:
    """Decode; raises ValueError on a name that is not valid modified UTF-7."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        char = name[pos]
        if ord(char) > 0x7E:
            raise ValueError("8-bit character in a modified UTF-7 name")
        if char != "&":
            out.append(char)
            pos += 1
            continue
        end = name.find("-", pos)
        if end < 0:
            raise ValueError("unterminated shift in a modified UTF-7 name")
        chunk = name[pos + 1:end]
        pos = end + 1
        if not chunk:
            out.append("&")
            continue
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            data = base64.b64decode(padded, validate=True)
            decoded = data.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            raise ValueError("bad base64 in a modified UTF-7 name") from None
        if not decoded or any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise ValueError("modified UTF-7 must not encode printable ASCII")
        if mutf7_encode(decoded) != "&" + chunk + "-":
            raise ValueError("non-canonical modified UTF-7")
        out.append(decoded)
    return "".join(out)
