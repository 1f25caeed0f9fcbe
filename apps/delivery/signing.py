"""DKIM signing (RFC 6376) on top of ``cryptography``: pure over bytes.

relaxed/relaxed canonicalisation (§3.4.2, §3.4.4), rsa-sha256 (§3.3.1) and
ed25519-sha256 (RFC 8463). Signs the header fields RFC 6376 §5.4.1 recommends
that the message has, each instance of them, and From once more than present
so that no From can be added without breaking the signature (§8.15)."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

# RFC 6376 §5.4.1 (and the list fields of RFC 2369 that dkimpy signs too).
SIGNED_FIELDS = frozenset((
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"resent-date", b"resent-from", b"resent-sender", b"resent-to",
    b"resent-cc", b"resent-message-id", b"in-reply-to", b"references", b"list-id",
    b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post", b"list-owner",
    b"list-archive",
))
OVERSIGNED_FIELDS = (b"from",)

_LINE_END = re.compile(rb"\r?\n")
# Runs of WSP that canonicalisation changes: two or more, or a tab (a lone SP stays).
_WSP_RUN = re.compile(rb"[ \t][ \t]+|\t")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_LINE_WIDTH = 78


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """([(name, raw value with its folding)], body): RFC 5322 §2.2.3 folding kept,
    the header section ends at the first empty line (CRLF, or a bare LF)."""
    match = re.search(rb"\r?\n\r?\n", message)
    if match is None:
        head, body = message, b""
    else:
        head, body = message[: match.start()], message[match.end():]
    fields: list[tuple[bytes, bytes]] = []
    for line in _LINE_END.split(head):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lowercase name, unfolded, WSP runs to one SP, none
    around the colon or at the end."""
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: WSP runs to one SP, none at line ends, no empty lines at
    the end; a non-empty body ends with CRLF. Whole-body passes, not per line."""
    text = body.replace(b"\r\n", b"\n")
    if b"\t" in text or b"  " in text:
        text = _WSP_RUN.sub(b" ", text)
    text = text.replace(b" \n", b"\n")
    text = text.rstrip(b" \n")
    return text.replace(b"\n", b"\r\n") + b"\r\n" if text else b""


@functools.lru_cache(maxsize=64)
def _load_key(private_key: str, algorithm: str) -> RSAPrivateKey | Ed25519PrivateKey:
    # cryptography (several MiB) is imported by the first signature, not by
    # every process that imports delivery: inbound-only listeners sign nothing.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    if algorithm == "ed25519-sha256":
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    key = serialization.load_pem_private_key(private_key.encode("ascii"), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("rsa-sha256 needs an RSA private key")
    return key


def _signature(private: RSAPrivateKey | Ed25519PrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    if isinstance(private, RSAPrivateKey):
        return private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
    return private.sign(hashlib.sha256(data).digest())


def _fold(tags: list[bytes]) -> bytes:
    """The tag list folded to about 78 columns (RFC 5322 §2.2.3); long base64
    values are broken inside, where FWS is allowed (RFC 6376 §3.5)."""
    out = b"DKIM-Signature:"
    column = len(out)
    for index, tag in enumerate(tags):
        piece = b" " + tag + (b";" if index < len(tags) - 1 else b"")
        if column + len(piece) > _LINE_WIDTH:
            out += b"\r\n"
            column = 0
            name = tag.partition(b"=")[0]
            if name in (b"b", b"bh") and len(piece) > _LINE_WIDTH:
                head = b" " + name + b"="
                out += head
                column = len(head)
                rest = piece[len(head):]
                while rest:
                    room = max(_LINE_WIDTH - column, 1)
                    out += rest[:room]
                    rest = rest[room:]
                    if rest:
                        out += b"\r\n "
                        column = 1
                    else:
                        column += room
                continue
        out += piece
        column += len(piece)
    return out


@dataclass(frozen=True)
class SigningKey:
    """A domain's key: PEM for rsa-sha256, the base64 seed for ed25519-sha256
    (RFC 8463 §4)."""

    selector: str
    private_key: str
    algorithm: str = "rsa-sha256"


def dkim_sign(
    message: bytes, *, domain: str, selector: str, private_key: str,
    algorithm: str = "rsa-sha256", now: int | None = None,
) -> bytes:
    """The message with a DKIM-Signature header in front: relaxed/relaxed."""
    return dkim_sign_all(message, domain=domain,
                         keys=[SigningKey(selector, private_key, algorithm)], now=now)


def dkim_sign_all(
    message: bytes, *, domain: str, keys: Sequence[SigningKey], now: int | None = None,
) -> bytes:
    """The message with one DKIM-Signature per key in front (relaxed/relaxed),
    the last key's outermost: what signing with each key in turn gives, since
    no signature signs another (DKIM-Signature is not in h=). The header
    section is split and the body canonicalised and hashed once for all."""
    for key in keys:
        if key.algorithm not in ("rsa-sha256", "ed25519-sha256"):
            raise ValueError(f"unknown DKIM algorithm {key.algorithm}")
    fields, body = split_message(message)
    # RFC 6376 §3.7: the body hash, of the canonicalised body.
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())

    # RFC 6376 §5.4.2: each name in h= takes the last instance not yet taken.
    signed: list[tuple[bytes, bytes]] = [f for f in fields if f[0].lower().strip() in SIGNED_FIELDS]
    names = [name.strip() for name, _ in signed]
    names += [n for n in names if n.lower() in OVERSIGNED_FIELDS]
    remaining = list(fields)
    header_input = b""
    for name in names:
        for index in range(len(remaining) - 1, -1, -1):
            if remaining[index][0].strip().lower() == name.lower():
                header_input += relaxed_header(*remaining.pop(index))
                break
        # A name with no instance left (oversigning) contributes nothing (§5.4.2).

    timestamp = b"t=%d" % (int(time.time()) if now is None else now)
    signatures: list[bytes] = []
    for key in keys:
        private = _load_key(key.private_key, key.algorithm)
        # RFC 6376 §3.5: the tag list.
        tags = [b"v=1", b"a=" + key.algorithm.encode(), b"c=relaxed/relaxed",
                b"d=" + domain.encode("ascii"), b"s=" + key.selector.encode("ascii"),
                timestamp, b"h=" + b":".join(names), b"bh=" + body_hash, b"b="]
        unsigned = _fold(tags)
        # §3.7: the signature field itself, b= empty, relaxed, without its CRLF.
        data = header_input + relaxed_header(*unsigned.split(b":", 1))[:-2]
        signature = _signature(private, data)
        tags[-1] = b"b=" + base64.b64encode(signature)
        signatures.append(_fold(tags) + b"\r\n")
    return b"".join(reversed(signatures)) + message
