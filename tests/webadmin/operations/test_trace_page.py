"""The message trace page: search, each message's timeline, and what a domain
administrator may see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.store import trace
from apps.store.models import TraceEvent
from tests.factories import make_mailbox
from tests.webadmin.operations.conftest import client_for


def message(queue_id: str, sender: str, recipient: str, *, message_id: str = "") -> None:
    """A message received, checked and filed, as the services record it."""
    trace.record([
        trace.event("received", queue_id, addresses=[sender, recipient],
                    message_id=message_id or f"{queue_id.lower()}@mx.example",
                    listener="smtp", peer_ip="192.0.2.7", helo="mx.sender.example", tls=True,
                    user="", sender=sender, recipients=[recipient], size=1234),
        trace.event("verdict", queue_id, addresses=[sender, recipient], checked=True,
                    spf="pass", dkim=["pass (sender.example)"], dmarc="pass", tests=[],
                    mailboxes=[{"mailbox": recipient, "score": 1.5, "threshold": 9.0,
                                "junk": False, "clues": [["viagra", 0.99]]}]),
        trace.event("filed", queue_id, addresses=[recipient], mailbox=recipient,
                    folder="INBOX", uid=7, junk=False),
    ])


def test_anonymous_and_mailbox_users_are_kept_out(client, db) -> None:
    assert client.get("/manage/trace/")["Location"].startswith("/signin/")
    user = make_mailbox("bob@ours.example").user
    assert client_for(user).get("/manage/trace/").status_code == 404


def test_a_message_shows_its_whole_timeline(superadmin) -> None:
    message("AAA111", "sender@sender.example", "bob@ours.example")
    page = client_for(superadmin).get("/manage/trace/").content.decode()
    assert "AAA111" in page
    assert "aaa111@mx.example" in page
    assert "Received over SMTP" in page and "192.0.2.7" in page and ">TLS<" in page
    assert "SPF <span class=\"badge ok\">pass</span>" in page
    assert "viagra" in page  # the classifier's clue
    assert "Filed</strong> into <span class=\"mono\">bob@ours.example</span>" in page
    assert page.index("Received over SMTP") < page.index("Checked") < page.index("Filed")


@pytest.mark.parametrize(("query", "found"), [
    ({"address": "bob@ours"}, ["AAA111"]),
    ({"address": "CAROL@theirs.example"}, ["BBB222"]),
    ({"message_id": "<special@id.example>"}, ["BBB222"]),
    ({"queue_id": "aaa111"}, ["AAA111"]),
])
def test_search_by_address_message_id_and_queue_id(superadmin, query, found) -> None:
    message("AAA111", "sender@sender.example", "bob@ours.example")
    message("BBB222", "sender@sender.example", "carol@theirs.example",
            message_id="special@id.example")
    page = client_for(superadmin).get("/manage/trace/", query).content.decode()
    assert [q for q in ("AAA111", "BBB222") if q in page] == found


def test_search_by_time_window(superadmin) -> None:
    message("OLD000", "a@sender.example", "bob@ours.example")
    message("NEW000", "a@sender.example", "bob@ours.example")
    TraceEvent.objects.filter(queue_id="OLD000").update(
        time=timezone.now() - timedelta(days=3))
    client = client_for(superadmin)
    # Nothing asked: the last day only.
    page = client.get("/manage/trace/").content.decode()
    assert "NEW000" in page and "OLD000" not in page
    since = (timezone.now() - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
    until = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    page = client.get("/manage/trace/", {"since": since, "until": until}).content.decode()
    assert "OLD000" in page and "NEW000" not in page


def test_a_backwards_window_is_a_field_error(superadmin) -> None:
    response = client_for(superadmin).get(
        "/manage/trace/", {"since": "2026-11-02T00:00", "until": "2026-11-01T00:00"})
    assert response.status_code == 400
    assert "Until must be after From." in response.content.decode()


def test_domain_admin_sees_only_messages_of_their_domains(domain_admin) -> None:
    message("OURS01", "sender@sender.example", "bob@ours.example")
    message("THEIRS", "sender@sender.example", "carol@theirs.example")
    # To both: the other domain's recipient and filing stay hidden.
    trace.record([
        trace.event("received", "BOTH01", addresses=["x@sender.example", "bob@ours.example",
                                                     "carol@theirs.example"],
                    listener="smtp", peer_ip="192.0.2.7", helo="h", tls=False, user="",
                    sender="x@sender.example",
                    recipients=["bob@ours.example", "carol@theirs.example"], size=1),
        trace.event("verdict", "BOTH01", addresses=["x@sender.example", "bob@ours.example",
                                                    "carol@theirs.example"],
                    checked=True, spf="none", dkim=["none"], dmarc="none", tests=[],
                    mailboxes=[{"mailbox": m, "score": 0, "threshold": 9.0, "junk": False,
                                "clues": []}
                               for m in ("bob@ours.example", "carol@theirs.example")]),
        trace.event("filed", "BOTH01", addresses=["carol@theirs.example"],
                    mailbox="carol@theirs.example", folder="INBOX", uid=1, junk=False),
    ])
    client = client_for(domain_admin)
    page = client.get("/manage/trace/").content.decode()
    assert "OURS01" in page and "BOTH01" in page
    assert "THEIRS" not in page
    assert "carol@theirs.example" not in page
    searched = client.get("/manage/trace/", {"queue_id": "THEIRS"}).content.decode()
    assert "No message matches." in searched


def test_the_trace_runs_a_constant_number_of_queries(superadmin, domain_admin,
                                                     django_assert_max_num_queries) -> None:
    for n in range(30):
        message(f"Q{n:05}", "sender@sender.example", "bob@ours.example")
    # session, user, the navigation's mailbox, (the domains), the two of the trace
    for user, budget in ((superadmin, 5), (domain_admin, 6)):
        client = client_for(user)
        with django_assert_max_num_queries(budget):
            page = client.get("/manage/trace/").content.decode()
        assert page.count("Filed</strong>") == 30
