"""The one way asyncio code reaches the ORM.

Runs a sync function in a worker thread (never on the event loop) and, as
healthchecks' smtpd does, drops that thread's database connection first if it
is too old or broken, so a restarted database does not poison a listener.

The health check (``CONN_HEALTH_CHECKS``: a ``SELECT 1`` before the first
query) is paid only by a connection that has been idle for a while: one that
answered a moment ago is as good as checked, and a check per unit of work was
one extra round trip per SMTP command. A connection that fails anyway marks
itself (``errors_occurred``) and is replaced at the thread's next unit of work;
that unit's caller sees a temporary failure (SMTP 451), never a lost message."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

# A connection used successfully this recently skips the health check.
RECENTLY_USED_SECONDS = 1.0

_last_success = threading.local()


def _refresh_connections() -> None:
    close_old_connections()
    if time.monotonic() - getattr(_last_success, "at", float("-inf")) < RECENTLY_USED_SECONDS:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None and not connection.errors_occurred:
                connection.health_check_done = True


def database_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(func)
    def with_fresh_connection(*args: P.args, **kwargs: P.kwargs) -> R:
        _refresh_connections()
        result = func(*args, **kwargs)
        _last_success.at = time.monotonic()
        return result

    return sync_to_async(with_fresh_connection, thread_sensitive=False)
