"""APPEND of binary content (RFC 3516 §4.4): pure functions over bytes.

A ``literal8`` may carry NUL octets, which no IMAP4rev1 literal can send back
in FETCH BODY[…]. RFC 3516 §6 lets the server change the transfer encoding of
APPENDed binary data when it must; only then, and only for the parts that hold
NUL, is the content stored as base64, so that BODY[…] and BODYSTRUCTURE stay
within the base protocol while BINARY[…] still returns the original octets.
"""

from __future__ import annotations

import base64
import re

from apps.store import mime

_TRANSFER_ENCODING = re.compile(rb"(?im)^content-transfer-encoding:[^\n]*\n(?:[ \t][^\n]*\n)*")
_ENCODED = {"base64", "quoted-printable"}


def encode_binary_parts(raw: bytes) -> bytes:
    """``raw`` with every part whose body holds a NUL re-encoded as base64."""
    if b"\0" not in raw:
        return raw
    structure = mime.analyze(raw).bodystructure
    edits: list[tuple[int, int, bytes]] = []
    for _section, part in mime.leaf_parts(structure):
        start, body_start, end = part["header_start"], part["body_start"], part["body_end"]
        body = raw[body_start:end]
        if b"\0" not in body or part["encoding"].lower() in _ENCODED:
            continue
        header = _TRANSFER_ENCODING.sub(b"", raw[start:body_start]).rstrip(b"\r\n")
        header = (header + b"\r\n" if header else b"") + \
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        edits.append((start, end, header + encoded.removesuffix(b"\r\n")))
    for start, end, replacement in sorted(edits, reverse=True):
        raw = raw[:start] + replacement + raw[end:]
    return raw
