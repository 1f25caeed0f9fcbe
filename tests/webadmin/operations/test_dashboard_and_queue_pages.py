"""The dashboard and the outbound queue pages, per role, with their query
counts; the queue's actions go through apps/delivery's services."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.delivery import services as delivery
from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec
from apps.store import health, trace
from apps.store.models import Heartbeat, TraceEvent
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored
from tests.webadmin.operations.conftest import client_for


def queue(sender: str, recipient: str = "carol@example.net") -> str:
    return delivery.enqueue(sender=sender, recipients=[RecipientSpec(recipient)],
                            data=make_message(recipient)).queue_id


# --- dashboard ----------------------------------------------------------------------


def test_dashboard_shows_counts_queue_storage_and_processes(superadmin) -> None:
    hour = int(time.time() // 3600)
    trace.bump_counters(Counter(received=7, delivered=5, junked=2), hour=hour)
    trace.bump_counters(Counter(received=3), hour=hour)  # another shard or the same: added
    trace.bump_counters(Counter(bounced=4), hour=hour - 24 * 3)  # three days ago
    make_mailbox("bob@ours.example", quota=10_000_000)
    queue("bob@ours.example")
    health.beat("listeners", detail={"listeners": {"smtp": {"port": 2525, "serving": True}}})
    Heartbeat.objects.create(kind="worker", host="w1", pid=1,
                             seen=timezone.now() - timedelta(minutes=10))
    page = client_for(superadmin).get("/manage/").content.decode()
    # The 24-hour table: this hour's row has the summed counts.
    assert "<td>10</td><td>5</td><td>2</td>" in page
    assert "Received <strong>10</strong>" in page
    assert "Bounced <strong>0</strong>" in page  # not in the last 24 hours…
    assert "Bounced <strong>4</strong>" in page  # …but in the last 30 days
    assert "<polyline class=\"line line-received\"" in page
    assert "1 <span>message</span>" in page  # the queue
    assert "9.5\xa0MB in quotas" in page
    assert "smtp :2525" in page and ">up<" in page and ">stale<" in page
    assert "never seen" in page  # beat
    assert "style=" not in page  # the CSP forbids inline styles


def test_dashboard_of_a_domain_admin_counts_their_domains_only(domain_admin) -> None:
    make_mailbox("bob@ours.example", quota=1_000_000)
    make_mailbox("carol@theirs.example", quota=5_000_000)
    queue("bob@ours.example")
    queue("carol@theirs.example")
    queue("carol@theirs.example")
    page = client_for(domain_admin).get("/manage/").content.decode()
    assert "1 <span>message</span>" in page
    assert "976.6\xa0KB in quotas" in page
    assert "<polyline" not in page and "Last seen" not in page  # platform-wide parts


def test_dashboard_runs_a_constant_number_of_queries(superadmin,
                                                     django_assert_max_num_queries) -> None:
    for n in range(20):
        make_mailbox(f"user{n}@ours.example")
        queue(f"user{n}@ours.example")
        health.beat("worker", host=f"w{n}")
    trace.bump_counters(Counter(received=1), hour=int(time.time() // 3600))
    client = client_for(superadmin)
    # session, user, navigation, queue, storage (2), processes, counters, last delivery
    with django_assert_max_num_queries(9):
        assert client.get("/manage/").status_code == 200


# --- outbound queue -----------------------------------------------------------------


def test_queue_lists_entries_with_their_state(superadmin, db) -> None:
    first = queue("alice@ours.example", "carol@example.net")
    second = queue("dave@theirs.example", "erin@example.net")
    QueueEntry.objects.filter(message__queue_id=second).update(
        attempts=2, last_reply="451 4.3.0 Mailbox busy",
        next_attempt=timezone.now() + timedelta(minutes=30))
    client = client_for(superadmin)
    page = client.get("/manage/queue/").content.decode()
    assert first in page and second in page
    assert "451 4.3.0 Mailbox busy" in page
    assert "attempts 2" in page
    deferred = client.get("/manage/queue/", {"status": "deferred"}).content.decode()
    assert second in deferred and first not in deferred
    by_address = client.get("/manage/queue/", {"address": "carol@"}).content.decode()
    assert first in by_address and second not in by_address
    assert client.get("/manage/queue/", {"status": "nonsense"}).status_code == 400


def test_domain_admin_sees_and_acts_on_their_senders_only(domain_admin) -> None:
    ours = queue("alice@ours.example")
    theirs = queue("dave@theirs.example")
    client = client_for(domain_admin)
    page = client.get("/manage/queue/").content.decode()
    assert ours in page and theirs not in page
    assert client.get(f"/manage/queue/{theirs}/").status_code == 404
    assert client.post(f"/manage/queue/{theirs}/delete/").status_code == 404
    assert QueueEntry.objects.filter(message__queue_id=theirs).exists()


def test_message_page_shows_the_stored_headers(superadmin) -> None:
    queue_id = queue("alice@ours.example")
    page = client_for(superadmin).get(f"/manage/queue/{queue_id}/").content.decode()
    assert "Subject: hello" in page
    assert "Hi!" not in page  # headers, not the body


def test_retry_now_makes_the_entry_due(superadmin) -> None:
    queue_id = queue("alice@ours.example")
    later = timezone.now() + timedelta(hours=2)
    QueueEntry.objects.update(next_attempt=later, attempts=1)
    response = client_for(superadmin).post(f"/manage/queue/{queue_id}/retry/", follow=True)
    assert QueueEntry.objects.get().next_attempt <= timezone.now()
    assert "will be tried again now" in response.content.decode()


def test_bounce_now_tells_the_sender(superadmin) -> None:
    make_mailbox("alice@ours.example")
    queue_id = queue("alice@ours.example")
    response = client_for(superadmin).post(f"/manage/queue/{queue_id}/bounce/", follow=True)
    assert "1 recipient bounced" in response.content.decode()
    assert not QueueEntry.objects.exists()
    (report,) = stored("alice@ours.example")
    assert b"Undelivered Mail Returned to Sender" in report


def test_delete_removes_without_a_report(superadmin) -> None:
    make_mailbox("alice@ours.example")
    queue_id = queue("alice@ours.example")
    client = client_for(superadmin)
    assert client.get(f"/manage/queue/{queue_id}/delete/").status_code == 405
    client.post(f"/manage/queue/{queue_id}/delete/")
    assert not QueueEntry.objects.exists()
    assert stored("alice@ours.example") == []
    assert TraceEvent.objects.filter(queue_id=queue_id, kind="deleted").exists()


@pytest.mark.parametrize("rows", [3, 40])
def test_queue_page_runs_a_constant_number_of_queries(superadmin, domain_admin, rows,
                                                      django_assert_max_num_queries) -> None:
    for n in range(rows):
        delivery.enqueue(sender="alice@ours.example", data=make_message("x@example.net"),
                         recipients=[RecipientSpec(f"r{n}@example.net"),
                                     RecipientSpec(f"s{n}@example.net")])
    # session, user, navigation, (domains), count, page, entries
    for user, budget in ((superadmin, 6), (domain_admin, 7)):
        client = client_for(user)
        with django_assert_max_num_queries(budget):
            page = client.get("/manage/queue/", {"status": "waiting"}).content.decode()
        assert page.count("Retry now</button>") == rows
