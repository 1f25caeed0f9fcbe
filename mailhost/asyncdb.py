"""The one way asyncio code reaches the ORM.

Runs a sync function in a worker thread (never on the event loop) and, as
healthchecks' smtpd does, drops that thread's database connection first if it
is too old or broken, so a restarted database does not poison a listener."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def database_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(func)
    def with_fresh_connection(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        return func(*args, **kwargs)

    return sync_to_async(with_fresh_connection, thread_sensitive=False)
