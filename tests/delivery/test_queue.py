"""The outbound queue against scripted receivers on 127.0.0.1: retries,
per-recipient replies, bounces and delay notices as RFC 3464 reports, MX
resolution through the fake DNS, claims that expire."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from email.message import Message

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.delivery import services
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.delivery.services import RecipientSpec
from apps.store import services as store
from apps.store.models import BlobText
from tests import fakedns
from tests.delivery.conftest import closed_port, run_queue
from tests.delivery.receiver import Receiver
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored


@pytest.fixture
def alice(transactional_db):
    return make_mailbox("alice@example.org")


def send(*recipients: str, sender: str = "alice@example.org", **params: str) -> OutboundMessage:
    data = make_message(", ".join(recipients)).replace(
        b"From: sender@remote.example", f"From: {sender or 'x@example.org'}".encode())
    specs = [RecipientSpec(r, notify=params.get("notify", ""), orcpt=params.get("orcpt", ""))
             for r in recipients]
    message = services.submit(sender=sender, recipients=specs, data=data,
                              ret=params.get("ret", ""), envid=params.get("envid", ""))
    assert message is not None
    return message


def reports(address: str = "alice@example.org") -> list[Message]:
    return [email.message_from_bytes(raw, policy=email.policy.compat32)
            for raw in stored(address)]


def status_blocks(report: Message) -> list[Message]:
    """The per-message block, then one per recipient (RFC 3464 §2.1)."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, _returned = report.get_payload()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    return list(status.get_payload())


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def any_receiver(request, receiver: Receiver) -> Receiver:
    """The receiver with and without PIPELINING: both client paths."""
    receiver.script.pipelining = request.param
    return receiver


def test_four_hundred_then_two_hundred_is_delivered_on_retry(alice, any_receiver):
    receiver = any_receiver
    receiver.script.rcpt["carol@example.net"] = ["451 4.3.0 Greylisted, try later"]
    send("carol@example.net")
    run_queue()
    entry = QueueEntry.objects.get()
    assert entry.attempts == 1 and entry.last_reply == "451 4.3.0 Greylisted, try later"
    assert entry.next_attempt > timezone.now() + timedelta(minutes=4)
    assert run_queue() == 0, "not due before its next attempt"

    assert run_queue(now=entry.next_attempt) == 1
    (got,) = receiver.script.messages
    assert got.recipients == ["carol@example.net"]
    assert not QueueEntry.objects.exists() and not OutboundMessage.objects.exists()
    assert stored("alice@example.org") == [], "no report for a delivered message"


def test_one_of_two_refused_one_delivered_one_bounced(alice, any_receiver):
    receiver = any_receiver
    receiver.script.rcpt["nobody@example.net"] = ["550 5.1.1 <nobody@example.net>: no such user"]
    send("carol@example.net", "nobody@example.net", envid="E-42",
         orcpt="rfc822;nobody@example.net")
    run_queue()
    # One connection carried both recipients, and only the accepted one got the data.
    assert receiver.script.connections == 1
    (got,) = receiver.script.messages
    assert got.recipients == ["carol@example.net"]
    assert not QueueEntry.objects.exists()

    (report,) = reports()
    assert report["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    assert report["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; mail.mailhost.test"
    assert per_message["Original-Envelope-Id"] == "E-42"
    assert per_recipient["Final-Recipient"] == "rfc822; nobody@example.net"
    assert per_recipient["Original-Recipient"] == "rfc822;nobody@example.net"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; 127.0.0.1"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    # RET not given: a failure report returns the whole message.
    returned = report.get_payload()[2]
    assert returned.get_content_type() == "message/rfc822"
    assert b"Hi!" in returned.as_bytes()


def test_ret_hdrs_returns_headers_only_and_notify_never_sends_nothing(alice, any_receiver):
    receiver = any_receiver
    receiver.script.rcpt["a@example.net"] = ["550 5.1.1 no"]
    receiver.script.rcpt["b@example.net"] = ["550 5.1.1 no"]
    send("a@example.net", ret="HDRS")
    send("b@example.net", notify="NEVER")
    run_queue()
    (report,) = reports()
    returned = report.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Hi!" not in returned.get_payload()
    assert "Subject: hello" in returned.get_payload()


def test_unreachable_retries_then_delay_notice_then_bounce(alice, settings):
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{closed_port()}"
    settings.MAILHOST_QUEUE_LIFETIME = 3 * 3600
    settings.MAILHOST_QUEUE_DELAY_NOTICE = 3600
    send("carol@example.net")
    start = timezone.now()
    run_queue()
    entry = QueueEntry.objects.get()
    assert entry.attempts == 1 and entry.last_reply.startswith("451 4.4.1")
    assert stored("alice@example.org") == [], "no notice before the delay threshold"

    # Over an hour later (the queue's clock, not a sleep): a delay notice, once.
    later = start + timedelta(minutes=70)
    QueueEntry.objects.update(next_attempt=later)
    run_queue(now=later)
    (notice,) = reports()
    _, per_recipient = status_blocks(notice)
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Status"].startswith("4.")
    assert per_recipient["Will-Retry-Until"]
    assert notice.get_payload()[2].get_content_type() == "text/rfc822-headers"
    QueueEntry.objects.update(next_attempt=later + timedelta(minutes=5))
    run_queue(now=later + timedelta(minutes=5))
    assert len(stored("alice@example.org")) == 1
    assert QueueEntry.objects.get().attempts == 3

    # After the lifetime: the last failure bounces (RFC 3463 X.4.7, permanent).
    expired = start + timedelta(hours=3, minutes=1)
    QueueEntry.objects.update(next_attempt=expired)
    run_queue(now=expired)
    assert not QueueEntry.objects.exists()
    bounce = reports()[1]
    _, per_recipient = status_blocks(bounce)
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.4.7"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 451 4.4.1")


def test_retry_schedule_stays_within_lifetime(settings):
    settings.MAILHOST_QUEUE_RETRY_MIN = 300
    settings.MAILHOST_QUEUE_RETRY_MAX = 4 * 3600
    delays = [services.retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:4] == [300, 600, 1200, 2400]
    assert max(delays) == 4 * 3600


def test_null_sender_is_never_sent_a_report(alice, receiver):
    receiver.script.rcpt["a@example.net"] = ["550 5.1.1 no"]
    send("a@example.net", sender="")
    run_queue()
    assert not QueueEntry.objects.exists()
    assert stored("alice@example.org") == []


def test_bounce_to_a_remote_sender_goes_through_the_queue_from_the_null_sender(
        transactional_db, receiver):
    receiver.script.rcpt["a@example.net"] = ["550 5.1.1 no"]
    send("a@example.net", sender="someone@example.net")
    run_queue()
    (dsn_entry,) = QueueEntry.objects.all()
    assert dsn_entry.recipient == "someone@example.net" and dsn_entry.message.sender == ""
    run_queue()
    got = receiver.script.messages[-1]
    assert got.mail_from == "<>" and got.recipients == ["someone@example.net"]
    assert b"multipart/report" in got.data


def test_dsn_parameters_are_passed_on_to_a_dsn_capable_server(alice, receiver):
    send("carol@example.net", ret="HDRS", envid="ID+1", notify="SUCCESS,FAILURE",
         orcpt="rfc822;carol@example.net")
    run_queue()
    (got,) = receiver.script.messages
    assert "RET=HDRS" in got.mail_options and "ENVID=ID+2B1" in got.mail_options
    assert "NOTIFY=SUCCESS,FAILURE" in got.rcpt_options
    # RFC 3461 §5.2.2: the next hop took the duty, so no "relayed" report here.
    assert stored("alice@example.org") == []


def test_null_mx_bounces_at_once(alice):
    fakedns.ZONE[fakedns.key("nomail.test", "MX")] = ["0 ."]
    send("x@nomail.test")
    run_queue()
    assert not QueueEntry.objects.exists()
    _, per_recipient = status_blocks(reports()[0])
    assert per_recipient["Status"] == "5.1.10"


def test_nonexistent_domain_bounces(alice):
    send("x@nowhere.test")
    run_queue()
    _, per_recipient = status_blocks(reports()[0])
    assert per_recipient["Status"] == "5.1.2"


def test_mx_preference_order_and_fallback_to_the_next_host(alice, receiver, settings):
    settings.MAILHOST_TRANSPORTS = ""
    settings.MAILHOST_DELIVERY_PORT = receiver.port
    # The preferred MX has an address where nothing listens; the second one works.
    fakedns.publish(["mx-routed.test 300 IN MX 20 mx2.mx-routed.test.",
                     "mx-routed.test 300 IN MX 10 mx1.mx-routed.test.",
                     "mx1.mx-routed.test 300 IN A 127.0.0.2",
                     "mx2.mx-routed.test 300 IN A 127.0.0.1"])
    send("x@mx-routed.test")
    run_queue()
    (got,) = receiver.script.messages
    assert got.recipients == ["x@mx-routed.test"]


def test_domain_without_mx_gets_mail_at_its_address(alice, receiver, settings):
    settings.MAILHOST_TRANSPORTS = ""
    settings.MAILHOST_DELIVERY_PORT = receiver.port
    fakedns.ZONE[fakedns.key("bare.test", "A")] = ["127.0.0.1"]  # RFC 5321 §5.1 implicit MX
    send("x@bare.test")
    run_queue()
    assert [m.recipients for m in receiver.script.messages] == [["x@bare.test"]]


def test_several_messages_to_one_domain_share_one_connection(alice, receiver):
    for n in range(3):
        send(f"r{n}@example.net")
    assert run_queue() == 1
    assert receiver.script.connections == 1
    assert len(receiver.script.messages) == 3


def test_a_busy_destination_is_claimed_in_parts_that_keep_a_message_whole(
        alice, receiver, settings):
    settings.MAILHOST_QUEUE_CLAIM_SIZE = 2
    send("a1@example.net", "a2@example.net", "a3@example.net")
    send("b1@example.net")
    send("c1@example.net")
    claims = services.claim_due()
    assert [len(ids) for _, ids in claims] == [3, 2]
    for claim, ids in claims:
        services.attempt(claim, ids)
    assert receiver.script.connections == 2
    assert sorted(r for m in receiver.script.messages for r in m.recipients) == [
        "a1@example.net", "a2@example.net", "a3@example.net", "b1@example.net",
        "c1@example.net"]
    assert not QueueEntry.objects.exists()


def test_a_delivery_task_goes_on_over_its_connection_with_mail_due_meanwhile(
        alice, receiver, settings):
    settings.MAILHOST_QUEUE_CLAIM_SIZE = 1
    for n in range(3):
        send(f"r{n}@example.net")
    first, *_others = services.claim_due(limit=1)
    services.attempt(*first, follow_up_seconds=60)
    assert receiver.script.connections == 1
    assert len(receiver.script.messages) == 3 and not QueueEntry.objects.exists()


def test_a_claim_excludes_other_runners_until_it_expires(alice, receiver, settings):
    settings.MAILHOST_QUEUE_CLAIM_SECONDS = 60
    send("carol@example.net")
    ((first, ids),) = services.claim_due()
    assert services.claim_due() == [], "claimed entries are not handed out twice"
    # The worker holding the claim died; after the lease the entry is taken again.
    later = timezone.now() + timedelta(seconds=61)
    ((second, again),) = services.claim_due(now=later)
    assert again == ids and second != first
    services.attempt(first, ids)  # the dead worker's task, redelivered late: a no-op
    assert receiver.script.messages == []
    services.attempt(second, again)
    assert len(receiver.script.messages) == 1
    services.attempt(second, again)  # and a duplicate task is harmless
    assert len(receiver.script.messages) == 1


def test_inbound_alias_forwards_to_an_external_address(transactional_db, mail_servers,
                                                       receiver):
    import smtplib

    from apps.directory import services as directory

    make_mailbox("alice@example.org")
    directory.create_alias("fwd@example.org", ["alice@example.org", "friend@example.net"])
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        refused = client.sendmail("someone@remote.example", ["fwd@example.org"],
                                  make_message("fwd@example.org"))
    assert refused == {}
    assert len(stored("alice@example.org")) == 1
    entry = QueueEntry.objects.get()
    assert entry.recipient == "friend@example.net"
    # SRS (tests/delivery/test_srs.py): the sender is ours, pointing back to theirs.
    assert entry.message.sender.startswith("SRS0=")
    assert entry.message.sender.endswith("=remote.example=someone@example.org")
    run_queue()
    (got,) = receiver.script.messages
    assert got.recipients == ["friend@example.net"]
    # Our trace field below the ARC set that seals the forwarded copy (RFC 8617).
    assert got.data.startswith(b"ARC-Seal: i=1; cv=none") and b"\r\nReceived: " in got.data


def test_mailqueue_lists_retries_and_deletes(alice, settings, capsys):
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{closed_port()}"
    message = send("carol@example.net")
    run_queue()
    call_command("mailqueue")
    out = capsys.readouterr().out
    assert message.queue_id in out and "<alice@example.org>" in out
    assert "<carol@example.net> attempts=1" in out and "(451 4.4.1" in out

    call_command("mailqueue", "--retry", message.queue_id)
    assert QueueEntry.objects.get().next_attempt <= timezone.now()
    call_command("mailqueue", "--delete", message.queue_id)
    assert not OutboundMessage.objects.exists()
    call_command("mailqueue")
    assert "Mail queue is empty" in capsys.readouterr().out


def test_a_route_that_requires_tls_is_not_used_in_clear(alice, settings):
    plain = Receiver(None).start()  # offers no STARTTLS
    try:
        settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{plain.port};tls=require"
        send("carol@example.net")
        run_queue()
        assert plain.script.messages == []
        assert QueueEntry.objects.get().last_reply.startswith("451 4.7.4")
        settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{plain.port};tls=may"
        QueueEntry.objects.update(next_attempt=timezone.now())
        run_queue()
        assert [m.tls for m in plain.script.messages] == [False]
    finally:
        plain.stop()


def test_queued_bytes_get_no_search_row_until_they_are_filed(alice):
    queued = send("carol@example.net", "alice@example.org")
    assert BlobText.objects.filter(blob_id=queued.blob_id).exists(), "filed for alice"
    remote_only = send("carol@example.net")
    assert not BlobText.objects.filter(blob_id=remote_only.blob_id).exists()
    data = store.get_blob_store().read(remote_only.blob_id)
    store.deliver([alice], data)
    assert BlobText.objects.filter(blob_id=remote_only.blob_id).exists()


def test_lines_starting_with_a_dot_arrive_unchanged(alice, any_receiver):
    # RFC 5321 §4.5.2: the client doubles a leading dot, the server removes it.
    body = b".hidden\r\n..two dots\r\n.\r\nlast line without an end"
    data = make_message("carol@example.net").replace(
        b"From: sender@remote.example", b"From: alice@example.org") + b"\r\n" + body
    services.submit(sender="alice@example.org",
                    recipients=[RecipientSpec("carol@example.net")], data=data)
    run_queue()
    (got,) = any_receiver.script.messages
    assert got.data.rstrip(b"\r\n") == data


def test_only_an_eight_bit_message_is_announced_as_8bitmime(alice, any_receiver):
    # RFC 6152 §3: BODY=8BITMIME with a body that has octets over 127, not otherwise.
    for body in ("Grüße aus Köln", "plain ASCII"):
        services.submit(sender="alice@example.org", recipients=[RecipientSpec("c@example.net")],
                        data=make_message("c@example.net", body=body).replace(
                            b"sender@remote.example", b"alice@example.org"))
    run_queue()
    eight_bit, ascii_only = any_receiver.script.messages
    assert "Grüße".encode() in eight_bit.data and "BODY=8BITMIME" in eight_bit.mail_options
    assert "BODY=8BITMIME" not in ascii_only.mail_options
