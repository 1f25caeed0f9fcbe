"""Two listener nodes on one database, Redis and blob store (issue 16): what
one node acknowledges, the other serves; IMAP IDLE, the POP3 lock and UID
order hold across them; a node killed mid-delivery loses nothing it
acknowledged while the other goes on; workers with beat on both nodes deliver
the outbound queue once."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import signal
import smtplib
import subprocess
import time
from collections import Counter

import pytest

from apps.delivery import services as delivery
from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec
from apps.mailservers.tls import server_context
from apps.store.models import Message
from tests.cluster.conftest import node_environment
from tests.delivery.receiver import Receiver
from tests.delivery.test_worker import start_worker
from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP
from tests.smtp.helpers import Senders, make_message, stored
from tests.smtp.test_crash import _assert_filed_once

pytestmark = pytest.mark.slow

ALICE = "alice@example.org"


def send(port: int, message: bytes, to: str = ALICE) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        assert client.sendmail("sender@remote.example", [to], message) == {}


def imap_session(port: int) -> RawIMAP:
    client = RawIMAP(port)
    assert client.login(ALICE, PASSWORD)[-1].split()[1] == b"OK"
    client.command("SELECT INBOX")
    return client


def uids(client: RawIMAP) -> list[int]:
    lines = client.command("UID SEARCH ALL")
    (found,) = [line for line in lines if line.startswith(b"* SEARCH")]
    return [int(uid) for uid in found.split()[2:]]


def test_mail_received_on_a_is_read_on_b_byte_for_byte(start_node):
    make_mailbox(ALICE)
    a, b = start_node("a"), start_node("b")
    message = make_message(ALICE, size=300_000)
    send(a.ports["smtp"], message)
    (filed,) = stored(ALICE)
    assert filed.endswith(message)
    assert re.search(rb"Received: from .*\r\n\tby a\.cluster\.test", filed)

    imap = imaplib.IMAP4("127.0.0.1", b.ports["imap"], timeout=30)
    imap.login(ALICE, PASSWORD)
    imap.select("INBOX", readonly=True)
    _, whole = imap.fetch("1", "(BODY.PEEK[])")
    assert whole[0][1] == filed
    _, part = imap.fetch("1", "(BODY.PEEK[]<150000.1000>)")  # a partial FETCH
    assert part[0][1] == filed[150000:151000]
    imap.logout()

    pop = poplib.POP3("127.0.0.1", b.ports["pop3"], timeout=30)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    _, lines, octets = pop.retr(1)
    # poplib splits at CRLF and undoes the dot-stuffing (RFC 1939 §3).
    assert b"\r\n".join(lines) + b"\r\n" == filed and octets >= len(filed)
    _, top, _ = pop.top(1, 0)
    assert b"\r\n".join(top) + b"\r\n" == filed[:filed.index(b"\r\n\r\n") + 4]
    pop.quit()


def test_idle_on_b_is_woken_by_a_delivery_on_a(start_node):
    make_mailbox(ALICE)
    a, b = start_node("a"), start_node("b")
    watcher = imap_session(b.ports["imap"])
    watcher.send(b"i IDLE\r\n")
    assert watcher.readline().startswith(b"+ ")
    watcher.sock.settimeout(30)
    send(a.ports["smtp"], make_message(ALICE))
    # With Redis the change comes over pub/sub, without it from B's poller. How
    # soon is bench/cluster.py's figure, not an assertion here (timings on a
    # loaded two-core machine are not behaviour).
    assert watcher.readline() == b"* 1 EXISTS\r\n"
    watcher.readline()  # * 1 RECENT
    watcher.send(b"DONE\r\n")
    assert watcher.readline().startswith(b"i OK")


def test_the_pop3_lock_holds_across_nodes(start_node):
    make_mailbox(ALICE)
    send_to = start_node("a", listeners=("smtp", "pop3"))
    b = start_node("b", listeners=("pop3",))
    send(send_to.ports["smtp"], make_message(ALICE))
    first = poplib.POP3("127.0.0.1", send_to.ports["pop3"], timeout=30)
    first.user(ALICE)
    first.pass_(PASSWORD)
    second = poplib.POP3("127.0.0.1", b.ports["pop3"], timeout=30)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    first.dele(1)
    first.quit()  # RFC 1939 §6: the deletion is done, the lock given up
    third = poplib.POP3("127.0.0.1", b.ports["pop3"], timeout=30)
    third.user(ALICE)
    third.pass_(PASSWORD)
    assert third.stat() == (0, 0)
    third.quit()


def test_uids_stay_unique_and_increasing_under_deliveries_on_both(start_node):
    """RFC 3501 §2.3.1.1: UIDs are strictly ascending; a client that has seen
    UID n never later sees a new message below it, whichever node filed it."""
    make_mailbox(ALICE)
    a, b = start_node("a"), start_node("b")
    watchers = [imap_session(a.ports["imap"]), imap_session(b.ports["imap"])]
    seen: list[set[int]] = [set(), set()]
    on_a = Senders(a.ports["smtp"], clients=3)
    on_b = Senders(b.ports["smtp"], clients=3)
    deadline = time.monotonic() + 90
    try:
        while (len(on_a.acknowledged) + len(on_b.acknowledged) < 60
               and time.monotonic() < deadline):
            for watcher, before in zip(watchers, seen, strict=True):
                now = set(uids(watcher))
                new = now - before
                assert before <= now
                assert not new or not before or min(new) > max(before), (sorted(before)[-5:],
                                                                          sorted(new))
                before |= new
    finally:
        on_a.stop()
        on_b.stop()
    acknowledged = on_a.acknowledged + on_b.acknowledged
    assert on_a.acknowledged and on_b.acknowledged
    _assert_filed_once(acknowledged)
    final = uids(imap_session(b.ports["imap"]))
    assert final == sorted(set(final))
    assert len(final) == Message.objects.filter(folder__mailbox__address=ALICE).count()


def test_a_node_killed_mid_delivery_loses_nothing_and_the_other_serves(start_node):
    make_mailbox(ALICE)
    a, b = start_node("a"), start_node("b")
    on_a = Senders(a.ports["smtp"], clients=3)  # they give up when A dies
    on_b = Senders(b.ports["smtp"], clients=3, reconnect=True)
    try:
        on_a.wait_for(10)
        on_b.wait_for(10)
        a.kill()
        after_kill = len(on_b.acknowledged)
        on_b.wait_for(after_kill + 10)
        assert len(on_b.acknowledged) >= after_kill + 10, "node B stopped serving"
    finally:
        on_a.stop()
        on_b.stop()
    acknowledged = on_a.acknowledged + on_b.acknowledged
    _assert_filed_once(acknowledged)
    # A message that A committed in the instant before the kill never got its
    # 250: its sender sends it again (at most one per client of A).
    filed = Message.objects.filter(folder__mailbox__address=ALICE).count()
    assert len(acknowledged) <= filed <= len(acknowledged) + 3
    reader = imap_session(b.ports["imap"])
    assert len(uids(reader)) == filed


def _kill_group(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(30)


def test_workers_with_beat_on_both_nodes_deliver_the_queue_once(transactional_db, s3_store,
                                                               settings, tmp_path):
    receiver = Receiver(server_context()).start()
    recipients = [f"r{n}@example.net" for n in range(30)]
    for address in recipients:
        delivery.enqueue(sender=ALICE, recipients=[RecipientSpec(address)],
                         data=make_message(address))
    workers = []
    try:
        for name in ("a", "b"):
            workers.append(start_worker(
                settings, receiver.port, tmp_path, f"worker-{name}",
                **node_environment(name, tmp_path), MAILHOST_QUEUE_BATCH="5",
                MAILHOST_QUEUE_CLAIM_SIZE="1",
                # No worker dies here: a claim must not expire (start_worker's
                # 3 s) while its task still waits behind others on this
                # loaded machine, or another runner takes it again and the
                # entry goes twice, as the queue's at-least-once design allows.
                MAILHOST_QUEUE_CLAIM_SECONDS="300"))
        deadline = time.monotonic() + 90
        while QueueEntry.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not QueueEntry.objects.exists(), [
            (tmp_path / f"worker-{name}.log").read_text()[-3000:] for name in ("a", "b")]
    finally:
        for worker in workers:
            _kill_group(worker)
        receiver.stop()
    delivered = Counter(r for message in receiver.script.messages for r in message.recipients)
    # Each once: no claim was run by both nodes.
    assert delivered == Counter(recipients), (delivered - Counter(recipients),
                                              Counter(recipients) - delivered)


def test_beat_on_two_nodes_runs_periodic_work_once_per_period(transactional_db, s3_store, settings,
                                                              tmp_path):
    """Two workers with beat, each sending run_queue every second: the queue
    runs that happen are the lease holders'; the rest are skipped."""
    receiver = Receiver(server_context()).start()
    workers = []
    try:
        for name in ("a", "b"):
            workers.append(start_worker(settings, receiver.port, tmp_path, f"beat-{name}",
                                        **node_environment(name, tmp_path)))
        logs = [tmp_path / f"beat-{name}.log" for name in ("a", "b")]
        ran = re.compile(r"Task apps\.store\.tasks\.run_periodic\[[^]]+\] succeeded in "
                         r"[0-9.e-]+s: (\S+)")
        deadline = time.monotonic() + 60
        results: list[str] = []
        while time.monotonic() < deadline:
            results = [m.group(1) for log in logs for m in ran.finditer(log.read_text())]
            if results.count("None") >= 3 and len(results) - results.count("None") >= 3:
                break
            time.sleep(0.5)
        assert results.count("None") >= 3, "no node's beat was ever skipped"
        assert len(results) - results.count("None") >= 3
    finally:
        for worker in workers:
            _kill_group(worker)
        receiver.stop()
