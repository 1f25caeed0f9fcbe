"""DKIM signing with dkimpy (RFC 6376): pure over bytes."""

from __future__ import annotations

import dkim


def dkim_sign(message: bytes, *, domain: str, selector: str, private_key_pem: str) -> bytes:
    """The message with a DKIM-Signature header in front: rsa-sha256,
    relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4), dkimpy's usual header set."""
    signature = dkim.sign(
        message, selector.encode("ascii"), domain.encode("ascii"),
        private_key_pem.encode("ascii"), canonicalize=(b"relaxed", b"relaxed"),
        linesep=b"\r\n",
    )
    return signature + message
