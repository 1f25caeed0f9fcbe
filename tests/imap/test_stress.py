"""Concurrent writers over real sockets, as imaptest's stress profile drives
them: APPEND and MULTIAPPEND from many sessions at once share the store's
group commit, yet each OK means the message is durable and its UIDs are its
own; a SIGKILLed listener loses nothing it answered OK. A change wakes the
other sessions of the process once, not again when Redis or the poller
brings it back."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection

from apps.store import blobs
from apps.store import services as store
from apps.store.models import Message
from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP

APPENDUID = re.compile(rb"OK \[APPENDUID (\d+) (\d+)(?::(\d+))?\]")


def _message(sender: int, number: int) -> bytes:
    return (f"From: writer{sender}@example.test\r\nTo: alice@example.test\r\n"
            f"Subject: stress {sender}-{number}\r\nMessage-ID: <s{sender}-{number}@example.test>"
            f"\r\n\r\nbody of {sender}-{number}\r\n").encode()


def _append(client: RawIMAP, messages: list[bytes]) -> bytes:
    """APPEND one message, or MULTIAPPEND (RFC 3502) several; the tagged line."""
    literals = b" ".join(b"{%d+}\r\n%s" % (len(m), m) for m in messages)
    return client.command(b"APPEND INBOX " + literals)[-1]


def _uids(line: bytes) -> list[int]:
    match = APPENDUID.search(line)
    assert match, line
    low = int(match.group(2))
    return list(range(low, int(match.group(3) or low) + 1))


class Writers:
    """Sessions appending (one message, then two, in turn) until stopped; the
    messages each OK acknowledged, with the UIDs its APPENDUID gave them."""

    def __init__(self, port: int, address: str, count: int) -> None:
        self.acknowledged: list[tuple[bytes, int]] = []
        self.by_session: list[list[int]] = [[] for _ in range(count)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(port, address, index),
                                         daemon=True) for index in range(count)]
        for thread in self.threads:
            thread.start()

    def _write(self, port: int, address: str, index: int) -> None:
        try:
            client = RawIMAP(port)
            client.login(address, PASSWORD)
            number = 0
            while not self._stop.is_set():
                batch = [_message(index, number + n) for n in range(1 + number % 2)]
                number += len(batch)
                line = _append(client, batch)
                uids = _uids(line)
                assert len(uids) == len(batch)
                with self._lock:
                    self.acknowledged += zip(batch, uids, strict=True)
                    self.by_session[index] += uids
        except (ConnectionError, OSError):
            pass  # the listener was killed under us

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} appended"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(30)


def test_concurrent_appends_get_unique_increasing_uids(imap_port, mailbox):
    writers = Writers(imap_port, mailbox.address, count=6)
    writers.wait_for(60)
    writers.stop()
    uids = [uid for _, uid in writers.acknowledged]
    assert len(set(uids)) == len(uids), "a UID given twice"
    for own in writers.by_session:
        assert own == sorted(own), "a session's UIDs went down"
    stored = dict(Message.objects.filter(folder__mailbox=mailbox, folder__name="INBOX")
                  .values_list("uid", "blob__subject"))
    for data, uid in writers.acknowledged:
        assert stored[uid] == re.search(rb"Subject: (.*)\r\n", data).group(1).decode()
    # A third session sees every message the writers were told of.
    reader = RawIMAP(imap_port)
    reader.login(mailbox.address, PASSWORD)
    assert f"* {len(stored)} EXISTS\r\n".encode() in reader.command("SELECT INBOX")


def test_multiappend_fsyncs_before_taking_the_write_lock(raw, mailbox, monkeypatch):
    """RFC 3502: all or nothing in one transaction, but the bytes are written
    durably before it, so other sessions' writers do not queue behind fsyncs."""
    in_transaction: list[bool] = []
    store_class = type(blobs.get_blob_store())  # the local or the S3 store
    put_many = store_class.put_many

    def watched(store: blobs.BlobStore, datas: list[bytes]) -> list[str]:
        in_transaction.append(connection.in_atomic_block)
        return put_many(store, datas)

    monkeypatch.setattr(store_class, "put_many", watched)
    line = _append(raw, [_message(1, 1), _message(1, 2), _message(1, 3)])
    assert _uids(line) == [1, 2, 3]
    assert in_transaction == [False]


def test_multiappend_over_quota_stores_none(imap_port, transactional_db):
    mailbox = make_mailbox("quota@example.test", quota=500)
    client = RawIMAP(imap_port)
    client.login(mailbox.address, PASSWORD)
    line = _append(client, [_message(2, 1), b"X-Big: " + b"x" * 600 + b"\r\n\r\nbig\r\n"])
    assert b" NO [OVERQUOTA]" in line
    assert not Message.objects.filter(folder__mailbox=mailbox).exists()
    assert _uids(_append(client, [_message(2, 2)])) == [1]


def test_a_change_in_this_process_wakes_an_idler_once(imap_port, mailbox, monkeypatch):
    store.deliver([mailbox], _message(0, 0))
    idler = RawIMAP(imap_port)
    idler.login(mailbox.address, PASSWORD)
    idler.command("SELECT INBOX")
    reads: list[int] = []
    folder_changes = store.folder_changes

    def counted(folder_id: int, since: int,
                **kwargs: object) -> store.FolderChanges | None:
        reads.append(since)
        return folder_changes(folder_id, since, **kwargs)

    monkeypatch.setattr(store, "folder_changes", counted)
    idler.send(b"i IDLE\r\n")
    assert idler.readline().startswith(b"+ ")
    # The writer selects nothing, so that only the idler reads the folder.
    writer = RawIMAP(imap_port)
    writer.login(mailbox.address, PASSWORD)
    _append(writer, [_message(0, 1)])
    assert idler.readline() == b"* 2 EXISTS\r\n"
    # Longer than the poller's tick, and than Redis takes to echo the change.
    time.sleep(2.5)
    assert len(reads) == 1, f"the idler read the folder {len(reads)} times for one change"
    idler.send(b"DONE\r\n")
    assert idler.until("i")[-1].startswith(b"i OK")


@pytest.mark.slow
def test_appends_answered_ok_survive_sigkill(listener_process):
    mailbox = make_mailbox("alice@example.test")
    process = listener_process(["imap"])
    writers = Writers(process.ports["imap"], mailbox.address, count=6)
    writers.wait_for(60)
    process.kill()
    writers.stop()
    acknowledged = writers.acknowledged
    # After a restart a client finds every message it was told was appended,
    # byte for byte, under the UID it was given.
    restarted = listener_process(["imap"])
    client = RawIMAP(restarted.ports["imap"])
    client.login(mailbox.address, PASSWORD)
    client.command("EXAMINE INBOX")
    text = b"".join(client.command("UID FETCH 1:* (UID BODY.PEEK[])"))
    served = {int(m.group(1)): text[m.end():m.end() + int(m.group(2))] for m in re.finditer(
        rb"\* \d+ FETCH \(UID (\d+) BODY\[\] \{(\d+)\}\r\n", text)}
    missing = [uid for data, uid in acknowledged if served.get(uid) != data]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged appends lost"
