"""Secrets the database must keep but never in clear (an IMAP import's remote
password, a domain's TSIG key): encrypted with a key derived from SECRET_KEY,
one derived key per purpose, so that a value sealed for one purpose cannot be
opened as another."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["InvalidToken", "seal", "unseal"]


def _cipher(purpose: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=purpose).derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(purpose: bytes, secret: str) -> str:
    return _cipher(purpose).encrypt(secret.encode()).decode()


def unseal(purpose: bytes, token: str) -> str:
    """The secret; raises ``InvalidToken`` if SECRET_KEY changed since."""
    return _cipher(purpose).decrypt(token.encode()).decode()
