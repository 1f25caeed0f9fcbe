"""Many clients, two listener processes, one mailbox: UIDs stay unique and
increasing and nothing is lost."""

import email
import hashlib
import smtplib
import threading

import pytest

from apps.store.blobs import get_blob_store
from apps.store.models import Folder, Message
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message

pytestmark = pytest.mark.slow

CLIENTS = 8
PER_CLIENT = 50


def test_parallel_clients_across_processes_get_unique_increasing_uids(listener_process):
    make_mailbox("alice@example.org")
    processes = [listener_process(["smtp"]), listener_process(["smtp"])]
    sent: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client(number: int) -> None:
        port = processes[number % 2].ports["smtp"]
        ids = sent.setdefault(number, [])
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                for n in range(PER_CLIENT):
                    message = make_message("alice@example.org", subject=f"c{number} m{n}")
                    smtp.sendmail("sender@remote.example", ["alice@example.org"], message)
                    ids.append(email.message_from_bytes(message)["Message-ID"])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors

    inbox = Folder.objects.get(mailbox__address="alice@example.org", name="INBOX")
    rows = list(Message.objects.filter(folder=inbox).order_by("uid")
                .values_list("uid", "modseq", "blob_id", "blob__message_id"))
    total = CLIENTS * PER_CLIENT
    assert [uid for uid, *_ in rows] == list(range(1, total + 1))
    assert inbox.uidnext == total + 1 and inbox.message_count == total
    modseqs = [modseq for _, modseq, *_ in rows]
    assert modseqs == sorted(modseqs) and inbox.highestmodseq == modseqs[-1]
    by_id = {message_id: uid for uid, _, _, message_id in rows}
    assert set(by_id) == {i for ids in sent.values() for i in ids}
    for ids in sent.values():  # each client's messages got increasing UIDs
        uids = [by_id[i] for i in ids]
        assert uids == sorted(uids)
    store = get_blob_store()
    for _, _, sha, _ in rows[:: total // 20]:
        assert hashlib.sha256(store.read(sha)).hexdigest() == sha
