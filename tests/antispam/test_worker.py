"""A real Celery worker, SIGKILLed while it checks a message: the message is
still delivered (the spool row outlives the worker; the sweeper files it)."""

import contextlib
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apps.antispam.models import SpooledMessage
from tests.conftest import ROOT, database_url
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored

pytestmark = pytest.mark.slow


class Worker:
    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mailhost", "worker", "--pool", "solo",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # Its own process group: with --beat the scheduler is a child process,
            # and a SIGKILL must take it too.
            start_new_session=True)
        self.output: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace"))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._drainer.join(30)  # the pipe ends with the process (and its children)
        if self.process.stdout and not self._drainer.is_alive():
            self.process.stdout.close()


def wait_for(condition, seconds: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + "".join(worker.output))
        time.sleep(0.2)


def _worker_env(settings, zone_file: Path) -> dict[str, str]:
    """A worker process's environment: this test's database, store and DNS
    zone, checks after the queue with a 3 s budget, a sweep every second."""
    return dict(os.environ, **{
        "DATABASE_URL": database_url(),
        "MAILHOST_STORAGE_ROOT": str(settings.MAILHOST_STORAGE_ROOT),
        "MAILHOST_FAKE_DNS": str(zone_file),
        "MAILHOST_ANTISPAM_INLINE": "0",
        "MAILHOST_ANTISPAM_TIMEOUT": "3",
        "MAILHOST_SPOOL_SWEEP_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    })


def test_killed_worker_still_ends_with_the_message_delivered(settings, mail_servers,
                                                            tmp_path: Path):
    settings.MAILHOST_ANTISPAM_INLINE = False  # filed by the worker, after the 250
    # The listener's own fallback (filing unchecked when time is up) is pushed
    # far out: here the worker's sweeper must do it.
    settings.MAILHOST_ANTISPAM_TIMEOUT = 600
    make_mailbox("bob@example.org")
    zone_file = tmp_path / "zone.json"
    # The DMARC lookup hangs: the worker is busy with the message when killed.
    # (DMARC looks up the From domain, remote.example in make_message; the
    # envelope domain is hung too so that the test holds if either is asked.)
    hang = {"sleep": 120, "answers": []}
    zone_file.write_text(json.dumps({"_dmarc.remote.example TXT": hang,
                                     "_dmarc.sender.example TXT": hang}))
    env = _worker_env(settings, zone_file)
    first = Worker(env)
    second = None
    try:
        message = make_message("bob@example.org", subject="must not be lost")
        with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
            client.ehlo("mx.sender.example")
            assert client.sendmail("alice@sender.example", ["bob@example.org"], message) == {}
        # Accepted and durable, not yet filed.
        assert SpooledMessage.objects.count() == 1
        wait_for(lambda: SpooledMessage.objects.filter(claimed_until__isnull=False).exists(),
                 120, "the worker to take the message", first)
        first.stop()
        assert stored("bob@example.org") == []

        zone_file.write_text("{}")
        second = Worker(env, "--beat", "--schedule", str(tmp_path / "beat-schedule"))
        wait_for(lambda: stored("bob@example.org") != [], 120, "the message to be filed",
                 second)
        (got,) = stored("bob@example.org")
        assert got.endswith(message)
        assert not SpooledMessage.objects.exists()
    finally:
        first.stop()
        if second:
            second.stop()


def test_worker_killed_mid_batch_files_every_message_exactly_once(settings, mail_servers,
                                                                  tmp_path: Path):
    """A worker claims a batch and is SIGKILLed while checking it (the DMARC
    lookup of the batch's middle message hangs): nothing of the batch is
    filed, and the next worker files every message once."""
    settings.MAILHOST_ANTISPAM_INLINE = False
    settings.MAILHOST_ANTISPAM_TIMEOUT = 600  # the listener's own fallback stays out
    make_mailbox("bob@example.org")
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps({"_dmarc.slow.example TXT": {"sleep": 120, "answers": []}}))
    env = _worker_env(settings, zone_file)
    subjects = [f"batch message {n}" for n in range(12)]
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        client.ehlo("mx.sender.example")
        for n, subject in enumerate(subjects):
            message = make_message("bob@example.org", subject=subject)
            if n == 6:
                message = message.replace(b"sender@remote.example", b"sender@slow.example")
            assert client.sendmail("alice@sender.example", ["bob@example.org"], message) == {}
    assert SpooledMessage.objects.count() == len(subjects)

    first = Worker(env)
    second = None
    try:
        # One task claims the whole spool, then hangs on the seventh message.
        wait_for(lambda: SpooledMessage.objects.filter(claimed_until__isnull=True).count() == 0,
                 120, "the worker to claim the batch", first)
        time.sleep(1)  # well into the hanging lookup
        first.stop()
        assert stored("bob@example.org") == []
        assert SpooledMessage.objects.count() == len(subjects)

        zone_file.write_text("{}")
        second = Worker(env, "--beat", "--schedule", str(tmp_path / "beat-schedule"))
        wait_for(lambda: not SpooledMessage.objects.exists(), 120, "the spool to be filed",
                 second)
        filed = [next(line for line in data.split(b"\r\n") if line.startswith(b"Subject: "))
                 for data in stored("bob@example.org")]
        assert sorted(filed) == sorted(f"Subject: {s}".encode() for s in subjects)
    finally:
        first.stop()
        if second:
            second.stop()
