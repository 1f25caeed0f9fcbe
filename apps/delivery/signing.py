"""DKIM signing with dkimpy (RFC 6376): pure over bytes."""

from __future__ import annotations

import dkim


def dkim_sign(
    message: bytes, *, domain: str, selector: str, private_key: str,
    algorithm: str = "rsa-sha256",
) -> bytes:
    """The message with a DKIM-Signature header in front: relaxed/relaxed
    (RFC 6376 §3.4.2, §3.4.4), dkimpy's usual header set. ``private_key`` is
    PEM for rsa-sha256, the base64 seed for ed25519-sha256 (RFC 8463)."""
    signature = dkim.sign(
        message, selector.encode("ascii"), domain.encode("ascii"),
        private_key.encode("ascii"), signature_algorithm=algorithm.encode("ascii"),
        canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n",
    )
    return signature + message
