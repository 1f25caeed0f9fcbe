"""Several listener processes on one port (MAILHOST_LISTENER_PROCESSES): a
child SIGKILLed under load is replaced and loses nothing it acknowledged; a
SIGKILLed parent takes its children with it."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

import pytest

from apps.store.models import Message
from tests.factories import make_mailbox
from tests.smtp.helpers import Senders, make_message
from tests.smtp.test_crash import _assert_filed_once

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def two_processes(monkeypatch):
    monkeypatch.setenv("MAILHOST_LISTENER_PROCESSES", "2")


def test_a_killed_child_is_replaced_and_loses_nothing_acknowledged(
        two_processes, listener_process):
    make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    parent = process.process.pid
    _wait_for(lambda: len(_children(parent)) == 2)
    first = _children(parent)
    senders = Senders(process.ports["smtp"], clients=6, reconnect=True)
    try:
        senders.wait_for(30)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # The parent starts another child, on the same port.
        _wait_for(lambda: len(_children(parent)) == 2 and victim not in _children(parent))
        after_kill = len(senders.acknowledged)
        _wait_for(lambda: len(senders.acknowledged) >= after_kill + 30)
    finally:
        senders.stop()
    assert process.terminate() == 0
    assert not any(_alive(pid) for pid in first | _children(parent))
    _assert_filed_once(senders.acknowledged)
    # A message the victim committed in the instant before the kill never got
    # its 250: SMTP allows that (its sender sends it again), at most one per
    # client in the middle of a transaction.
    filed = Message.objects.filter(folder__mailbox__address="alice@example.org").count()
    assert len(senders.acknowledged) <= filed <= len(senders.acknowledged) + 6


def test_a_killed_parent_takes_its_children(two_processes, listener_process):
    make_mailbox("alice@example.org")
    process = listener_process(["smtp", "imap"])
    parent = process.process.pid
    _wait_for(lambda: len(_children(parent)) == 2)
    children = _children(parent)
    with smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("sender@remote.example", ["alice@example.org"],
                      make_message("alice@example.org"))
    process.kill()
    _wait_for(lambda: not any(_alive(pid) for pid in children), seconds=10)
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=5)
    assert Message.objects.filter(folder__mailbox__address="alice@example.org").count() == 1
