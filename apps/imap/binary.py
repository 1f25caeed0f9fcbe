"""Binary content (RFC 3516): pure functions over bytes.

``binary_section`` is what BINARY[section] serves: the section with its
transfer encoding undone, for a leaf part its body decoded, for a message or
multipart every leaf inside decoded and labelled "binary" (as Dovecot does).

A ``literal8`` may carry NUL octets, which no IMAP4rev1 literal can send back
in FETCH BODY[…]. RFC 3516 §6 lets the server change the transfer encoding of
APPENDed binary data when it must; only then, and only for the parts that hold
NUL, is the content stored as base64, so that BODY[…] and BODYSTRUCTURE stay
within the base protocol while BINARY[…] still returns the original octets.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence

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


class UnknownEncoding(ValueError):
    """A transfer encoding that cannot be undone (RFC 3516 §4.2 UNKNOWN-CTE)."""


def _leaves(node: dict) -> Iterator[dict]:
    """The leaf parts at or below ``node``, message/rfc822 parts entered."""
    if node.get("parts"):
        for child in node["parts"]:
            yield from _leaves(child)
    elif node.get("message"):
        yield from _leaves(node["message"]["bodystructure"])
    else:
        yield node


def binary_section(raw: bytes, structure: dict, part: Sequence[int], *,
                   relabel: bool = True) -> bytes:
    """BINARY[part] of a message (RFC 3516 §4.2), empty when there is no such
    part; UnknownEncoding when a leaf's encoding cannot be undone. Without
    ``relabel`` the decoded parts keep their Content-Transfer-Encoding header
    (what URLFETCH's BODYPARTSTRUCTURE of BINARY data describes)."""
    node = mime.find_part(structure, list(part)) if part else structure
    if node is None:
        return b""
    if part and not node.get("parts") and not node.get("message"):
        decoded = mime.decode_body(raw[node["body_start"]:node["body_end"]], node["encoding"])
        if decoded is None:
            raise UnknownEncoding(node["encoding"])
        return decoded
    start, end = (0, len(raw)) if not part else (node["body_start"], node["body_end"])
    edits: list[tuple[int, int, bytes]] = []
    for leaf in _leaves(node if part else structure):
        if leaf["encoding"].lower() not in _ENCODED:
            continue
        decoded = mime.decode_body(raw[leaf["body_start"]:leaf["body_end"]], leaf["encoding"])
        if decoded is None:
            raise UnknownEncoding(leaf["encoding"])
        header = raw[leaf["header_start"]:leaf["body_start"]]
        if relabel:
            header = _TRANSFER_ENCODING.sub(
                lambda m: b"Content-Transfer-Encoding: binary" + (
                    b"\r\n" if m.group().endswith(b"\r\n") else b"\n"), header, count=1)
        edits.append((leaf["header_start"], leaf["body_end"], header + decoded))
    out = raw[start:end]
    for first, last, replacement in sorted(edits, reverse=True):
        out = out[:first - start] + replacement + out[last - start:]
    return out
