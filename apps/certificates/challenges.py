"""http-01 answers (RFC 8555 §8.3) waiting for the CA's validation: kept in
the shared cache, so that whichever process runs the ACME client (a worker, a
management command) and whichever web process the CA reaches agree."""

from __future__ import annotations

from django.core.cache import cache

# Longer than any order takes to validate; withdrawn as soon as it is done.
_LIFETIME = 3600


def _key(token: str) -> str:
    return f"certificates:http-01:{token}"


def publish(token: str, key_authorization: str) -> None:
    cache.set(_key(token), key_authorization, timeout=_LIFETIME)


def withdraw(token: str) -> None:
    cache.delete(_key(token))


def key_authorization(token: str) -> str | None:
    """What to answer at /.well-known/acme-challenge/<token>, if anything."""
    return cache.get(_key(token))
