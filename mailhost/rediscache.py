"""Django's Redis cache with one connection pool per process.

Django keeps a cache object per context (``caches`` is a context-local, not a
thread-local), and each object builds its own connection pool on first use. A
listener runs every session in a context of its own, so each login opened a
new TCP connection to Redis for its lockout check. Here the client (and its
pool, which redis-py makes thread-safe and resets after a fork) is shared by
every cache object of the process with the same servers and options."""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[str, RedisCacheClient] = {}
_clients_lock = threading.Lock()


class SharedRedisCacheClient(RedisCacheClient):
    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._redis_by_pool: dict[int, Any] = {}

    def get_client(self, key: str | None = None, *, write: bool = False) -> Any:
        # One redis.Redis per pool, not one per call.
        pool = self._get_connection_pool(write)
        client = self._redis_by_pool.get(id(pool))
        if client is None:
            client = self._redis_by_pool[id(pool)] = self._client(connection_pool=pool)
        return client


class SharedRedisCache(RedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._client_key = repr((self._servers, sorted(self._options.items())))

    @property
    def _cache(self) -> RedisCacheClient:  # type: ignore[override]
        client = _clients.get(self._client_key)
        if client is None:
            with _clients_lock:
                client = _clients.setdefault(
                    self._client_key, SharedRedisCacheClient(self._servers, **self._options))
        return client
