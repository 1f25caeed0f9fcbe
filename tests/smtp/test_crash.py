"""SIGKILL a listener while clients send: every message that got 250 survives."""

import hashlib
import smtplib
import time

import pytest

from apps.antispam import services
from apps.antispam.models import SpooledMessage
from apps.store.blobs import get_blob_store
from apps.store.models import Message
from tests.factories import make_mailbox
from tests.smtp.helpers import Senders, make_message

pytestmark = pytest.mark.slow


def _load_then_kill(process, *, clients: int, at_least: int) -> list[tuple[str, bytes]]:
    """Clients send to alice until the listener is SIGKILLed, once it has
    acknowledged ``at_least`` messages; (Message-ID, bytes) of each message
    that got its 250."""
    senders = Senders(process.ports["smtp"], clients=clients, size=4000)
    senders.wait_for(at_least)
    process.kill()
    senders.stop()
    assert len(senders.acknowledged) >= at_least
    return senders.acknowledged


def _assert_filed_once(acknowledged: list[tuple[str, bytes]]) -> None:
    stored = {}
    for message_id, sha in Message.objects.filter(
            folder__mailbox__address="alice@example.org").values_list(
                "blob__message_id", "blob_id"):
        assert message_id not in stored, f"{message_id} filed twice"
        stored[message_id] = sha
    store = get_blob_store()
    missing = [mid for mid, _ in acknowledged if mid not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    for message_id, message in acknowledged:
        data = store.read(stored[message_id])
        assert hashlib.sha256(data).hexdigest() == stored[message_id]
        assert data.endswith(message)


def test_acknowledged_messages_survive_sigkill(listener_process):
    make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    _assert_filed_once(_load_then_kill(process, clients=6, at_least=60))


def test_spooled_batches_survive_sigkill(listener_process, monkeypatch, settings):
    """The default: spooled before the 250 in group-committed batches, filed
    by a worker later. Killed with batches in flight, the listener has lost
    nothing it acknowledged, and each such message is filed exactly once when
    the workers file what the spool holds."""
    monkeypatch.setenv("MAILHOST_ANTISPAM_INLINE", "0")
    make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    acknowledged = _load_then_kill(process, clients=12, at_least=120)
    assert not Message.objects.exists()  # nothing filed before the 250: spooled only
    settings.MAILHOST_ANTISPAM_INLINE = False
    for pk in SpooledMessage.objects.order_by("pk").values_list("pk", flat=True):
        assert services.file_spooled(pk)  # what check_and_file does in a worker
    _assert_filed_once(acknowledged)
    assert not SpooledMessage.objects.exists()


def test_sigterm_stops_gracefully_and_exits_zero(listener_process):
    make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    idle = smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=10)
    idle.ehlo("client.test")
    busy = smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=10)
    busy.ehlo("client.test")
    busy.mail("sender@remote.example")
    busy.rcpt("alice@example.org")
    process.process.send_signal(15)
    time.sleep(0.5)
    # The transaction in flight may finish...
    code, _ = busy.data(make_message("alice@example.org"))
    assert code == 250
    busy.close()
    assert process.process.wait(30) == 0
    # ...the idle session was told to go, and no new connection is accepted.
    code, text = idle.noop()
    assert (code, text[:5]) == (421, b"4.3.2")
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=5)
    assert Message.objects.filter(folder__mailbox__address="alice@example.org").count() == 1
    assert any("stopped" in line for line in process.output)
