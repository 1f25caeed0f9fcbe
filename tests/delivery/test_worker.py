"""A real ``celery -A mailhost worker`` (with its beat) killed with SIGKILL
while it is delivering: the message is delivered afterwards, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.delivery import services
from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec
from tests.conftest import ROOT, database_url
from tests.smtp.helpers import make_message

pytestmark = pytest.mark.slow


def start_worker(settings, receiver_port: int, tmp_path: Path, name: str,
                 **extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url(),
        "MAILHOST_STORAGE_ROOT": str(settings.MAILHOST_STORAGE_ROOT),
        "MAILHOST_TRANSPORTS": f"example.net=127.0.0.1:{receiver_port}",
        "MAILHOST_QUEUE_INTERVAL": "1",
        "MAILHOST_QUEUE_CLAIM_SECONDS": "3",
        "MAILHOST_QUEUE_KICK": "0",
        "MAILHOST_HOSTNAME": "mail.mailhost.test",
        "PYTHONUNBUFFERED": "1",
        **extra,
    })
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mailhost", "worker", "-B",
         "--concurrency", "1", "--loglevel", "INFO", "--hostname", f"{name}@%h",
         "--schedule", str(tmp_path / f"{name}-beat")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool children (its own session, started above)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def _drain_with_a_second_worker(settings, receiver, tmp_path) -> None:
    """A fresh worker sends everything still queued (claims of a dead one
    expire first), within 90 s."""
    second = start_worker(settings, receiver.port, tmp_path, "second")
    try:
        deadline = time.monotonic() + 90
        while QueueEntry.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        kill_group(second)
    assert not QueueEntry.objects.exists(), (tmp_path / "second.log").read_text()


def test_worker_killed_mid_delivery_loses_nothing(transactional_db, receiver, settings,
                                                   tmp_path):
    receiver.script.stall_data = 1
    services.enqueue(sender="alice@example.org", recipients=[RecipientSpec("carol@example.net")],
                     data=make_message("carol@example.net"))
    first = start_worker(settings, receiver.port, tmp_path, "first")
    try:
        assert receiver.script.stalled.wait(90), (tmp_path / "first.log").read_text()
    finally:
        kill_group(first)
    assert receiver.script.messages == []
    assert QueueEntry.objects.get().claim, "still claimed by the dead worker"

    _drain_with_a_second_worker(settings, receiver, tmp_path)
    (got,) = receiver.script.messages
    assert got.recipients == ["carol@example.net"]


def test_worker_killed_in_the_middle_of_a_connection_loses_and_repeats_nothing(
        transactional_db, receiver, settings, tmp_path):
    # A queue run claims one message; its task claims the next ones in turn and
    # sends them over its connection: the worker dies during the third, the two
    # before it were recorded as sent.
    receiver.script.stall_after = 2
    recipients = [f"r{n}@example.net" for n in range(5)]
    for address in recipients:
        services.enqueue(sender="alice@example.org", recipients=[RecipientSpec(address)],
                         data=make_message(address))
    first = start_worker(settings, receiver.port, tmp_path, "first",
                         MAILHOST_QUEUE_BATCH="1", MAILHOST_QUEUE_CLAIM_SIZE="1")
    try:
        assert receiver.script.stalled.wait(90), (tmp_path / "first.log").read_text()
    finally:
        kill_group(first)
    assert receiver.script.connections == 1
    assert QueueEntry.objects.count() == 3

    _drain_with_a_second_worker(settings, receiver, tmp_path)
    assert sorted(r for m in receiver.script.messages for r in m.recipients) == recipients
