"""Process heartbeats: a real ``runmailservers`` process beats with its
listeners; the beat-scheduled task records the worker that ran it."""

from __future__ import annotations

import os
import time

from apps.store import tasks
from apps.store.models import Heartbeat


def test_listener_process_beats_with_its_listeners(listener_process, monkeypatch) -> None:
    monkeypatch.setitem(os.environ, "MAILHOST_HEARTBEAT_INTERVAL", "1")
    process = listener_process(["smtp", "imap"])
    deadline = time.monotonic() + 20
    while not Heartbeat.objects.filter(kind="listeners").exists():
        assert time.monotonic() < deadline, "".join(process.output)
        time.sleep(0.2)
    row = Heartbeat.objects.get(kind="listeners")
    assert row.pid == process.process.pid
    assert row.detail["listeners"] == {
        "smtp": {"port": process.ports["smtp"], "serving": True},
        "imap": {"port": process.ports["imap"], "serving": True}}
    first_seen = row.seen
    while Heartbeat.objects.get(pk=row.pk).seen == first_seen:
        assert time.monotonic() < deadline, "no second heartbeat"
        time.sleep(0.2)


def test_the_heartbeat_task_records_its_worker(db) -> None:
    tasks.heartbeat.apply()
    (row,) = Heartbeat.objects.all()
    assert row.kind == "worker"
    assert row.pid == os.getpid()
