"""A listener SIGKILLed while a POP3 session holds a maildrop: the lock it
leaves is freed as soon as its owner is known to be gone, not only once the
lock's lifetime (MAILHOST_POP3_LOCK_SECONDS, five minutes) has run out."""

import poplib
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.pop3 import services
from apps.pop3.models import MaildropLock
from apps.store.models import Heartbeat
from tests.factories import make_mailbox
from tests.pop3.helpers import fill, login, sample_messages

pytestmark = pytest.mark.slow


def test_lock_of_a_killed_listener_is_freed_at_once(listener_process):
    mailbox = make_mailbox("alice@example.org")
    fill(mailbox, sample_messages(mailbox.address))
    first = listener_process(["pop3"])
    holder = poplib.POP3("127.0.0.1", first.ports["pop3"], timeout=10)
    login(holder, mailbox)
    assert holder.stat()[0] == 3
    first.kill()
    second = listener_process(["pop3"])
    client = poplib.POP3("127.0.0.1", second.ports["pop3"], timeout=10)
    assert login(client, mailbox).startswith(b"+OK")
    assert client.stat()[0] == 3
    client.quit()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.django_db
def test_lock_owner_gone_by_pid_here_or_by_stale_heartbeat_elsewhere():
    mailbox = make_mailbox()
    now = timezone.now()

    def held_by(host: str, pid: int) -> None:
        MaildropLock.objects.update_or_create(mailbox=mailbox, defaults={
            "token": "old", "host": host, "pid": pid,
            "expires": now + timedelta(minutes=5)})

    held_by(socket.gethostname(), dead_pid())
    assert services.acquire_lock(mailbox.pk, "new", seconds=60)
    held_by("other-host", 4242)  # no heartbeat known: it may be alive
    assert not services.acquire_lock(mailbox.pk, "new", seconds=60)
    Heartbeat.objects.create(kind="listeners", host="other-host", pid=4242,
                             seen=now - timedelta(seconds=5))
    assert not services.acquire_lock(mailbox.pk, "new", seconds=60)  # beating
    Heartbeat.objects.filter(host="other-host").update(seen=now - timedelta(hours=1))
    assert services.acquire_lock(mailbox.pk, "new", seconds=60)
    held_by(socket.gethostname(), 0)  # a row from before owners were recorded
    assert not services.acquire_lock(mailbox.pk, "new", seconds=60)
