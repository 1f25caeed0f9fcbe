"""Counters in the cache that expire with their window (rate limits).

On Redis one ``increment`` is one round trip (a pipeline of ``SET NX EX`` and
``INCRBY``) where Django's ``cache.add`` + ``cache.incr`` took three (``incr``
asks ``EXISTS`` first); on any other cache backend it falls back to those."""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def increment(key: str, *, timeout: int, delta: int = 1) -> int:
    """Add ``delta`` to the counter ``key``, created at 0 with ``timeout``
    seconds to live if absent; returns the new value."""
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        cache.add(key, 0, timeout=timeout)
        try:
            return cache.incr(key, delta)
        except ValueError:  # expired between add and incr: a new window
            cache.set(key, delta, timeout=timeout)
            return delta
    full_key = cache.make_and_validate_key(key)
    # Django's Redis client stores integers unpickled, so INCRBY and
    # cache.get() agree on the value.
    client = cache._cache.get_client(full_key, write=True)
    pipe = client.pipeline(transaction=False)
    pipe.set(full_key, 0, ex=timeout, nx=True)
    pipe.incrby(full_key, delta)
    return int(pipe.execute()[1])
