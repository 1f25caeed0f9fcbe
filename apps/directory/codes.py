"""Secrets the server makes for people to copy: recovery codes and app
passwords. Groups of four letters and digits that cannot be misread, compared
without regard to case, spaces or dashes; kept as a SHA-256 digest, which is
enough for random values of 80 bits and more (a slow hash is for passwords
people choose)."""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


def new_code(groups: int) -> str:
    """``groups`` groups of four characters: ~19.8 random bits each."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(4)) for _ in range(groups))


def normal(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def code_digest(code: str) -> str:
    return hashlib.sha256(normal(code).encode()).hexdigest()
