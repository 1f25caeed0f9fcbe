"""mailhost.asyncdb: a listener thread whose database connection was cut
(a restarted PostgreSQL) recovers, with or without the health check."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import DatabaseError, connection

from apps.directory.models import Domain
from mailhost import asyncdb

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="SQLite connections have no health check to pass")


def _cut_own_connection() -> None:
    """What a database restart does to this thread's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def _count_domains() -> int:
    return Domain.objects.count()


def _in_one_thread(*steps):
    """Run the steps in turn through database_sync_to_async on one thread, as
    a listener's pool thread runs them; each step's result or its exception."""
    async def run():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        outcomes = []
        for step in steps:
            try:
                outcomes.append(await asyncdb.database_sync_to_async(step)())
            except DatabaseError as error:
                outcomes.append(error)
        await asyncdb.database_sync_to_async(lambda: connection.close())()
        return outcomes

    return asyncio.run(run())


def test_a_connection_idle_for_a_while_is_checked_and_replaced(transactional_db, monkeypatch):
    monkeypatch.setattr(asyncdb, "RECENTLY_USED_SECONDS", 0)
    outcomes = _in_one_thread(_count_domains, _cut_own_connection, _count_domains)
    assert outcomes == [0, None, 0]


def test_a_connection_cut_right_after_use_fails_one_unit_of_work_only(transactional_db,
                                                                      monkeypatch):
    monkeypatch.setattr(asyncdb, "RECENTLY_USED_SECONDS", 3600)
    first, cut, failed, recovered = _in_one_thread(
        _count_domains, _cut_own_connection, _count_domains, _count_domains)
    assert (first, cut, recovered) == (0, None, 0)
    assert isinstance(failed, DatabaseError)
