"""Body lines short enough to relay: pure over bytes.

RFC 5322 §2.1.1 limits a line to 998 octets and RFC 5321 §4.5.3.1.6 a text
line to 1000 with its CRLF. We accept longer lines (real mail has them), but a
message we relay with one may be refused or wrapped by the next server, which
breaks our DKIM signature. So before a submitted message is signed, and before
a forwarded one is queued, each leaf part with a longer line is re-encoded as
quoted-printable (RFC 2045 §6.7), and only those parts: everything else keeps
its bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from apps.store import mime

MAX_LINE = 998  # octets, without the CRLF (RFC 5322 §2.1.1)

_ENCODING_FIELD = re.compile(rb"content-transfer-encoding[ \t]*:", re.IGNORECASE)
_MIME_VERSION_FIELD = re.compile(rb"(?im)^mime-version[ \t]*:")
_CONTENT_TYPE_FIELD = re.compile(rb"(?im)^content-type[ \t]*:")
_QUOTED_PRINTABLE = b"Content-Transfer-Encoding: quoted-printable\r\n"


def has_long_line(data: bytes) -> bool:
    """Whether a line of ``data`` is longer than MAX_LINE octets (its CR not counted)."""
    lines = data.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE:
        return False
    return any(len(line) - line.endswith(b"\r") > MAX_LINE for line in lines)


def limit_line_length(message: bytes) -> bytes:
    """``message`` with every leaf part that has a body line over MAX_LINE
    octets re-encoded as quoted-printable, its Content-Transfer-Encoding
    field changed to say so; a message without MIME fields gets them (RFC 2045
    §4, §5.2). A message without such a line comes back as it is."""
    if not has_long_line(message):
        return message
    root = mime.analyze(message).bodystructure
    out = message
    # From the last part to the first, so the offsets of those not yet done hold.
    for part in sorted(_leaves(root), key=lambda p: p["body_start"], reverse=True):
        body = message[part["body_start"]:part["body_end"]]
        if not has_long_line(body):
            continue
        decoded = mime.decode_body(body, part["encoding"])
        if decoded is None:
            continue  # an encoding we cannot undo: leave the part as it is
        header = message[part["header_start"]:part["body_start"]]
        if part["encoding"] == "base64":
            # Base64 in one long line: the same encoding in lines of 76 (RFC 2045 §6.8).
            encoded = base64.encodebytes(decoded).replace(b"\n", b"\r\n")
        else:
            header = _with_field(header, _QUOTED_PRINTABLE + _mime_fields(part, header, decoded))
            encoded = binascii.b2a_qp(decoded, istext=True)  # CRLF line breaks stay CRLF
        out = out[:part["header_start"]] + header + encoded + out[part["body_end"]:]
    return out


def _leaves(part: dict[str, Any]) -> list[dict[str, Any]]:
    """Every leaf under ``part``, inside encapsulated messages too."""
    if part.get("parts"):
        return [leaf for child in part["parts"] for leaf in _leaves(child)]
    if part.get("message"):
        return _leaves(part["message"]["bodystructure"])
    return [part]


def _mime_fields(part: dict[str, Any], header: bytes, decoded: bytes) -> bytes:
    """For the top of a message without MIME fields: MIME-Version, and a
    Content-Type naming the charset its 8-bit text is in (RFC 2045 §5.2 would
    otherwise read it as US-ASCII)."""
    if part["header_start"] != 0 or _MIME_VERSION_FIELD.search(header):
        return b""
    fields = b"MIME-Version: 1.0\r\n"
    if not _CONTENT_TYPE_FIELD.search(header) and not decoded.isascii():
        try:
            decoded.decode("utf-8")
            charset = b"utf-8"
        except UnicodeDecodeError:
            charset = b"unknown-8bit"  # RFC 1428 §3
        fields += b"Content-Type: text/plain; charset=" + charset + b"\r\n"
    return fields


def _with_field(header: bytes, fields: bytes) -> bytes:
    """A header block (ending with its empty line, if it has one) without its
    Content-Transfer-Encoding fields and with ``fields`` at its end."""
    lines = header.splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue  # a folded continuation of the dropped field
        dropping = bool(_ENCODING_FIELD.match(line))
        if not dropping:
            kept.append(line)
    if kept and kept[-1].strip(b"\r\n") == b"":
        return b"".join(kept[:-1]) + fields + kept[-1]
    return b"".join(kept) + fields + b"\r\n"  # a part without a header: now it has one
