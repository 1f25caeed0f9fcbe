"""No single beat (issue 16): periodic work runs under a lease, so that beat
may run on every node and the work still runs once per period."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.store import leases
from apps.store.models import Lease
from apps.store.tasks import run_periodic
from mailhost.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

WORK = "tests.store.test_leases.work"
runs: list[str] = []


@celery_app.task(name=WORK)
def work() -> str:
    runs.append(threading.current_thread().name)
    time.sleep(0.2)  # long enough for the other callers to arrive meanwhile
    return "done"


@pytest.fixture(autouse=True)
def _no_runs_yet() -> None:
    runs.clear()


def call_from_beats(count: int, period: float = 60.0) -> list[object]:
    """``count`` nodes' beats sending the same period's task at once, each
    run by a worker thread of its own (its own database connection)."""
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def beat(index: int) -> None:
        try:
            start.wait()
            results[index] = run_periodic(WORK, period)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat, args=(i,), name=f"node{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_every_periodic_task_but_the_heartbeat_runs_under_a_lease():
    celery_app.loader.import_default_modules()  # as a worker does at its start
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        if name == "heartbeat":  # each node's own sign of life
            assert entry["task"] == "apps.store.tasks.heartbeat"
            continue
        assert entry["task"] == "apps.store.tasks.run_periodic", name
        task_name, period = entry["args"]
        assert task_name in celery_app.tasks, name
        assert period == entry["schedule"]


def test_two_beats_at_once_run_the_work_once():
    results = call_from_beats(2)
    assert len(runs) == 1
    assert sorted(results, key=str) == [None, "done"]


def test_four_beats_at_once_run_the_work_once():
    call_from_beats(4)
    assert len(runs) == 1


def test_the_same_period_later_is_skipped_and_the_next_one_runs():
    assert run_periodic(WORK, 60.0) == "done"
    assert run_periodic(WORK, 60.0) is None  # another node's beat, same period
    assert len(runs) == 1
    # The lease is kept until just before the next period, not longer.
    lease = Lease.objects.get(name=WORK)
    assert timezone.now() + timedelta(seconds=50) < lease.expires
    assert lease.expires < timezone.now() + timedelta(seconds=60)
    # A short period: its lease has lapsed by the time the next one is due.
    Lease.objects.all().delete()
    assert run_periodic(WORK, 0.5) == "done"
    time.sleep(0.5)
    assert run_periodic(WORK, 0.5) == "done"
    assert len(runs) == 3


def test_a_lease_held_by_a_live_node_is_respected():
    Lease.objects.create(name=WORK, holder="node-b:4242:running",
                         expires=timezone.now() + timedelta(seconds=30))
    assert run_periodic(WORK, 60.0) is None
    assert runs == []
    assert Lease.objects.get(name=WORK).holder == "node-b:4242:running"


def test_an_expired_lease_of_a_dead_node_is_taken_over():
    Lease.objects.create(name=WORK, holder="node-b:4242:died",
                         expires=timezone.now() - timedelta(seconds=1))
    assert run_periodic(WORK, 60.0) == "done"
    assert len(runs) == 1
    assert Lease.objects.get(name=WORK).holder.startswith(leases.new_holder().rpartition(":")[0])


def test_a_lease_is_extended_while_its_work_outlasts_it(settings):
    settings.MAILHOST_LEASE_SECONDS = 3
    outcome: dict[str, bool] = {}
    finished = threading.Event()

    def other_node() -> None:
        try:
            with leases.held("long-work") as ours:
                outcome["first"] = ours
                time.sleep(4.5)  # longer than MAILHOST_LEASE_SECONDS
        finally:
            finished.set()
            connection.close()

    thread = threading.Thread(target=other_node)
    thread.start()
    while "first" not in outcome:
        time.sleep(0.05)
    time.sleep(3.5)  # past the first expiry: extended meanwhile, still held
    assert not finished.is_set()
    with leases.held("long-work") as ours:
        assert ours is False
    thread.join()
    assert outcome["first"] is True
    with leases.held("long-work") as ours:  # given up once the work ended
        assert ours is True
