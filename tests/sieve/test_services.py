"""The Sieve service: scripts stored with their rules, and what filing
(apps/delivery/filing.py) does with a script's redirects (loop protection,
rate limit) and rejects."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.delivery import filing, srs
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.sieve import services
from apps.store.blobs import get_blob_store
from apps.store.models import Folder
from apps.store.services import DeliveryRequest
from mailhost.errors import Conflict, LimitExceeded, NotFound
from tests.factories import make_mailbox

LETTER = (b"Received: from x\r\n\tby mx.ours.example (Mailhost) with ESMTP id 1\r\n"
          b"\tfor <alice+tag@ours.example>;\r\n\tThu, 26 Nov 2026 10:00:00 +0000\r\n"
          b"From: bob@example.net\r\nTo: alice@ours.example\r\nSubject: hi\r\n\r\nHello\r\n")


@pytest.fixture
def alice(db):
    return make_mailbox("alice@ours.example")


def activate(mailbox, content: str) -> None:
    services.put_script(mailbox, "s", content)
    services.set_active(mailbox, "s")


def test_scripts_are_checked_stored_and_one_is_active(alice, settings):
    with pytest.raises(services.ScriptInvalid, match="line 2: unknown command frob"):
        services.put_script(alice, "bad", "keep;\nfrob;")
    services.put_script(alice, "one", "keep;")
    services.put_script(alice, "two", "discard;")
    services.set_active(alice, "one")
    services.set_active(alice, "two")
    assert [(s.name, s.active) for s in services.list_scripts(alice)] == [
        ("one", False), ("two", True)]
    with pytest.raises(services.ScriptActive):
        services.delete_script(alice, "two")
    with pytest.raises(Conflict):
        services.rename_script(alice, "one", "two")
    with pytest.raises(NotFound):
        services.set_active(alice, "three")
    settings.MAILHOST_SIEVE_MAX_SCRIPTS = 2
    with pytest.raises(LimitExceeded) as caught:
        services.put_script(alice, "three", "keep;")
    assert caught.value.context["quota"] == "MAXSCRIPTS"
    services.put_script(alice, "one", "stop;")  # replacing one is not one more


def test_the_envelope_recipient_keeps_its_subaddress_and_fileinto_creates_the_folder(alice):
    activate(alice, 'require ["fileinto", "envelope", "subaddress", "imap4flags"];'
                    ' if envelope :detail "to" "tag" { fileinto :flags "\\\\Seen" "Tagged/Sub"; }')
    plans = filing.plan_filing([(alice, LETTER)], sender="bob@example.net")
    assert plans[alice.pk].filings == {"Tagged/Sub": (1, ())}
    assert set(Folder.objects.filter(mailbox=alice).values_list("name", flat=True)) >= {
        "Tagged", "Tagged/Sub"}


def test_redirect_loops_and_rate_are_refused_and_the_message_kept(alice, settings):
    activate(alice, 'redirect "elsewhere@example.net";')
    plan = filing.plan_filing([(alice, LETTER)], sender="bob@example.net")[alice.pk]
    assert plan.redirects == ["elsewhere@example.net"] and plan.filings == {}
    filing.queue_redirects([plan])
    entry = QueueEntry.objects.get()
    assert entry.recipient == "elsewhere@example.net"
    # RFC 5228 §4.2: the original envelope sender, SRS-rewritten for our domain.
    assert srs.reverse(entry.message.sender) == "bob@example.net"
    assert entry.message.sender.endswith("@ours.example")
    redirected = get_blob_store().read(entry.message.blob_id)
    assert redirected.startswith(b"X-Sieve-Redirected-By: alice@ours.example\r\n")
    # The same message coming back is not sent round again: it is kept.
    again = filing.plan_filing([(alice, redirected)], sender="bob@example.net")[alice.pk]
    assert again.redirects == [] and again.filings == {"INBOX": (0, ())}
    settings.MAILHOST_SIEVE_MAX_HOPS = 2
    looped = filing.plan_filing([(alice, b"Received: a\r\n" * 2 + LETTER)],
                                  sender="bob@example.net")[alice.pk]
    assert looped.redirects == [] and "INBOX" in looped.filings
    settings.MAILHOST_SIEVE_MAX_HOPS = 25
    settings.MAILHOST_SIEVE_REDIRECTS_PER_HOUR = 1
    limited = filing.plan_filing([(alice, LETTER)], sender="bob@example.net")[alice.pk]
    assert limited.redirects == [] and "INBOX" in limited.filings
    assert OutboundMessage.objects.count() == 1


def test_reject_after_acceptance_sends_no_bounce(alice):
    activate(alice, 'require "reject"; reject "go away";')
    plan = filing.plan_filing([(alice, LETTER)], sender="forged@example.net")[alice.pk]
    filing.queue_redirects([plan])
    filing.send_replies([plan])
    assert plan.filings == {}
    assert not OutboundMessage.objects.exists(), "RFC 5429: no backscatter"


def test_mailboxes_without_an_active_script_are_left_to_the_default(alice):
    services.put_script(alice, "s", "discard;")
    assert filing.scripted_mailboxes([alice.pk]) == set()
    assert filing.plan_filing([(alice, LETTER)], sender="bob@example.net") == {}


def test_a_scripts_vacation_never_answers_the_users_own_mail(alice):
    activate(alice, 'require "vacation"; vacation "away";')
    own = LETTER.replace(b"From: bob@example.net", b"From: alice@ours.example")
    for sender in ("alice@ours.example", "alice+x@ours.example"):
        plan = filing.plan_filing([(alice, own)], sender=sender)[alice.pk]
        filing.send_replies([plan])
    assert not OutboundMessage.objects.exists()
    plan = filing.plan_filing([(alice, LETTER)], sender="bob@example.net")[alice.pk]
    filing.send_replies([plan])
    assert OutboundMessage.objects.get().sender == ""  # the reply, from the null sender


def test_a_redirect_is_queued_in_the_transaction_that_files(alice):
    """A message redirected and not kept is in the queue when the filing
    commits, not after: nothing acknowledged is lost to a crash in between."""
    activate(alice, 'require "vacation"; redirect "elsewhere@example.net"; vacation "away";')
    with transaction.atomic():
        (plans,) = filing.deliver_filed([filing.Filing(DeliveryRequest([alice.pk], LETTER),
                                                       "bob@example.net")])
        assert QueueEntry.objects.get().recipient == "elsewhere@example.net"
        transaction.set_rollback(True)
    assert not QueueEntry.objects.exists(), "rolled back with the filing"
    assert [plan.outcome.vacation.reason for plan in plans] == ["away"]  # replies: after
