"""What each stage records for the message trace and the dashboard's counters:
real SMTP listeners and a real remote server, the events read back."""

from __future__ import annotations

import smtplib
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.delivery import services as delivery
from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec
from apps.directory.services import create_alias
from apps.store import health, trace
from apps.store import services as store
from apps.store.models import FlowCounter, Heartbeat, TraceEvent
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import make_message, stored
from tests.webadmin.operations.conftest import run_queue


def kinds(queue_id: str) -> list[str]:
    return list(TraceEvent.objects.filter(queue_id=queue_id).order_by("time", "pk")
                .values_list("kind", flat=True))


def counters() -> dict[str, int]:
    hour = int(time.time() // 3600)
    return {kind: total for (_, kind), total in trace.flow_counts(hour).items()}


def queue_id_of(reply: bytes) -> str:
    return reply.decode().rpartition("id=")[2]


def test_mx_delivery_records_acceptance_verdict_and_filing(mail_servers) -> None:
    make_mailbox("bob@ours.example")
    data = make_message("bob@ours.example")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.ehlo("client.remote.example")
        smtp.mail("sender@remote.example")
        smtp.rcpt("bob@ours.example")
        code, reply = smtp.data(data)
    assert code == 250
    queue_id = queue_id_of(reply)
    assert kinds(queue_id) == ["received", "verdict", "filed"]
    received, verdict, filed = TraceEvent.objects.filter(queue_id=queue_id).order_by("time", "pk")
    assert received.message_id == trace.message_id_of(data) != ""
    assert received.detail["peer_ip"] == "127.0.0.1"
    assert received.detail["helo"] == "client.remote.example"
    assert received.detail["tls"] is False
    assert received.detail["recipients"] == ["bob@ours.example"]
    assert verdict.detail["checked"] is True
    assert verdict.detail["spf"] == "none"
    assert verdict.detail["mailboxes"][0]["mailbox"] == "bob@ours.example"
    assert filed.detail == {"mailbox": "bob@ours.example", "folder": "INBOX", "uid": 1,
                            "junk": False}
    assert counters() == {"received": 1, "delivered": 1}


def test_submission_to_a_remote_recipient_records_every_attempt(mail_servers, receiver,
                                                                client_tls_context) -> None:
    make_mailbox("alice@ours.example")
    receiver.script.rcpt["carol@example.net"] = ["451 4.3.0 Try again later"]
    with smtplib.SMTP("127.0.0.1", mail_servers.port("submission")) as smtp:
        smtp.starttls(context=client_tls_context)
        smtp.login("alice@ours.example", PASSWORD)
        smtp.sendmail("alice@ours.example", ["carol@example.net"], make_message(
            "carol@example.net").replace(b"sender@remote.example", b"alice@ours.example"))
    queue_id = QueueEntry.objects.get().message.queue_id
    run_queue()
    run_queue(timezone.now() + timedelta(hours=1))
    assert kinds(queue_id) == ["submitted", "queued", "deferred", "sent"]
    submitted, _, deferred, sent = TraceEvent.objects.filter(queue_id=queue_id).order_by(
        "time", "pk")
    assert submitted.detail["user"] == "alice@ours.example"
    assert submitted.detail["tls"] is True
    assert deferred.detail["reply"] == "451 4.3.0 Try again later"
    assert deferred.detail["host"] == "127.0.0.1"
    assert sent.detail["reply"].startswith("250")
    assert sent.detail["attempt"] == 2
    assert counters() == {"deferred": 1, "sent": 1}


def test_bounce_records_the_failure_and_the_report_to_the_sender(transactional_db,
                                                                 receiver) -> None:
    make_mailbox("alice@ours.example")
    receiver.script.rcpt["nobody@example.net"] = ["550 5.1.1 No such user"]
    message = delivery.enqueue(sender="alice@ours.example", data=make_message(
        "nobody@example.net"), recipients=[RecipientSpec("nobody@example.net")])
    run_queue()
    assert kinds(message.queue_id) == ["queued", "bounced", "dsn"]
    dsn = TraceEvent.objects.get(queue_id=message.queue_id, kind="dsn")
    assert dsn.detail["to"] == "alice@ours.example"
    assert dsn.detail["action"] == "failed"
    assert len(stored("alice@ours.example")) == 1  # the report itself
    assert counters()["bounced"] == 1


def test_bounce_now_reports_as_an_expired_message_does(transactional_db) -> None:
    make_mailbox("alice@ours.example")
    message = delivery.enqueue(sender="alice@ours.example", data=make_message(
        "carol@example.net"), recipients=[RecipientSpec("carol@example.net")])
    assert delivery.bounce_now(message.queue_id) == 1
    assert not QueueEntry.objects.exists()
    (report,) = stored("alice@ours.example")
    assert b"Status: 5.4.7" in report
    assert b"Action: failed" in report
    assert kinds(message.queue_id) == ["queued", "bounced", "dsn"]


def test_forward_to_a_remote_address_is_traced_into_the_queue(mail_servers) -> None:
    make_mailbox("bob@ours.example")
    create_alias("fwd@ours.example", ["carol@example.net"])
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.sendmail("sender@remote.example", ["fwd@ours.example"],
                      make_message("fwd@ours.example"))
    (queue_id,) = set(TraceEvent.objects.values_list("queue_id", flat=True))
    assert kinds(queue_id) == ["received", "queued"]


@pytest.mark.parametrize("batch", [2, 20])
def test_group_commit_records_a_batch_in_constant_statements(db, batch) -> None:
    mailbox = make_mailbox("bob@ours.example")
    requests = [store.DeliveryRequest([mailbox.pk], make_message(mailbox.address),
                                      queue_id=f"Q{n}") for n in range(batch)]
    with CaptureQueriesContext(connection) as queries:
        assert store.deliver_batch(requests) == [None] * batch
    trace_statements = [q["sql"] for q in queries.captured_queries
                        if "store_traceevent" in q["sql"] or "store_flowcounter" in q["sql"]]
    assert len(trace_statements) == 2  # one bulk insert, one counter upsert
    assert TraceEvent.objects.filter(kind="filed").count() == batch
    assert counters() == {"delivered": batch}


def test_old_events_and_counters_are_pruned(db, settings) -> None:
    settings.MAILHOST_TRACE_RETENTION_DAYS = 7
    trace.record([trace.event("queued", "OLD"), trace.event("queued", "NEW")])
    TraceEvent.objects.filter(queue_id="OLD").update(time=timezone.now() - timedelta(days=8))
    now_hour = int(time.time() // 3600)
    FlowCounter.objects.create(hour=now_hour - 24 * 40, kind="received", count=3)
    FlowCounter.objects.create(hour=now_hour - 24 * 20, kind="received", count=2)
    assert trace.prune() == 1
    assert list(TraceEvent.objects.values_list("queue_id", flat=True)) == ["NEW"]
    # The dashboard's 30 days stay, whatever the events' retention.
    assert list(FlowCounter.objects.values_list("count", flat=True)) == [2]


def test_heartbeats_mark_processes_up_then_stale(db, settings) -> None:
    health.beat("listeners", detail={"listeners": {"smtp": {"port": 25, "serving": True}}})
    health.beat_published(sender=health.HEARTBEAT_TASK)
    health.beat_published(sender="apps.delivery.tasks.run_queue")  # not beat's own
    assert sorted((p.kind, p.up) for p in health.processes()) == [
        ("beat", True), ("listeners", True)]
    later = timezone.now() + timedelta(seconds=3 * settings.MAILHOST_HEARTBEAT_INTERVAL + 1)
    by_kind = {p.kind: p.up for p in health.processes(now=later)}
    assert by_kind == {"beat": True, "listeners": False}
    health.beat("listeners")  # the same process again: one row, refreshed
    assert Heartbeat.objects.filter(kind="listeners").count() == 1


def test_a_refused_delivery_records_nothing(db) -> None:
    mailbox = make_mailbox("bob@ours.example", quota=100)
    request = store.DeliveryRequest([mailbox.pk], make_message(mailbox.address, size=500),
                                    queue_id="REFUSED",
                                    trace_events=[trace.event("received", "REFUSED")])
    (error,) = store.deliver_batch([request])
    assert error is not None
    assert not TraceEvent.objects.exists()
    assert counters() == {}
