"""mailhost.rediscache: every session of a listener reads the cache over the
same few Redis connections (Django's own backend opened one per session's
context)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from django.conf import settings
from django.core.cache import cache

from mailhost.asyncdb import database_sync_to_async

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="Redis only")

SESSIONS = 40


def _connections_received() -> int:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


def test_sessions_share_the_redis_connections():
    def session_read() -> dict[str, int]:
        # What a login's lockout check reads.
        return cache.get_many(["rediscache-test-login", "rediscache-test-ip"])

    async def sessions() -> list[dict[str, int]]:
        # One task per session, as the listener runs them: each its own context.
        return await asyncio.gather(*[asyncio.create_task(database_sync_to_async(session_read)())
                                      for _ in range(SESSIONS)])

    before = _connections_received()
    # From an empty context, as the listener's: this test's own cache object
    # (made by the fixture that empties the cache) is not inherited.
    assert len(contextvars.Context().run(asyncio.run, sessions())) == SESSIONS
    # At most one connection per worker thread (plus ours for INFO), not one
    # per session. Other clients of this Redis may connect meanwhile: a margin.
    assert _connections_received() - before < SESSIONS // 2
