"""SIGKILL a listener while clients send: every message that got 250 survives."""

import email
import hashlib
import smtplib
import threading
import time

import pytest

from apps.store.blobs import get_blob_store
from apps.store.models import Message
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message

pytestmark = pytest.mark.slow


def test_acknowledged_messages_survive_sigkill(listener_process):
    make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    port = process.ports["smtp"]
    acknowledged: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        n = 0
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                while not stop.is_set():
                    message = make_message("alice@example.org", subject=f"{number}-{n}",
                                           size=4000)
                    smtp.sendmail("sender@remote.example", ["alice@example.org"], message)
                    with lock:
                        acknowledged.append(
                            (email.message_from_bytes(message)["Message-ID"], message))
                    n += 1
        except (smtplib.SMTPException, OSError):
            pass  # the server died under us: expected

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    stop.set()
    for thread in threads:
        thread.join(30)

    assert len(acknowledged) >= 60
    stored = {row[0]: row[1] for row in Message.objects.filter(
        folder__mailbox__address="alice@example.org").values_list("blob__message_id", "blob_id")}
    store = get_blob_store()
    missing = [mid for mid, _ in acknowledged if mid not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    for message_id, message in acknowledged:
        data = store.read(stored[message_id])
        assert hashlib.sha256(data).hexdigest() == stored[message_id]
        assert data.endswith(message)


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
