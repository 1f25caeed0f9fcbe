"""Process heartbeats: a real ``runmailservers`` process beats with its
listeners; the beat-scheduled task records the worker that ran it, and beat
itself when it sends it."""

from __future__ import annotations

import os
import time

from apps.store import tasks
from apps.store.models import Heartbeat
from tests.delivery.test_worker import kill_group, start_worker


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


def test_a_real_worker_with_beat_records_both(transactional_db, settings, tmp_path,
                                              monkeypatch) -> None:
    monkeypatch.setitem(os.environ, "MAILHOST_WORKER_HEARTBEAT_INTERVAL", "1")
    worker = start_worker(settings, 0, tmp_path, "heartbeat")
    try:
        deadline = time.monotonic() + 60
        while set(Heartbeat.objects.values_list("kind", flat=True)) != {"worker", "beat"}:
            assert time.monotonic() < deadline, (tmp_path / "heartbeat.log").read_text()
            time.sleep(0.5)
    finally:
        kill_group(worker)
    assert Heartbeat.objects.get(kind="worker").host.startswith("heartbeat@")
