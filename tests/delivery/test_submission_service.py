"""The one submission service (apps/delivery/submission.py) on its own, and
shared by its two front ends: SMTP submission and the webmail."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from apps.delivery import submission
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.delivery.services import SenderNotAllowed
from apps.directory import services as directory
from apps.store.models import TraceEvent, TraceKind
from apps.webmail import writing
from mailhost.errors import Disabled, MailhostError, OverQuota
from tests import fakedns
from tests.delivery.conftest import publish_domain
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import stored


def letter(sender: str = "alice@example.org") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nHi!\r\n"
            ).encode()


@pytest.fixture
def alice(db):
    return make_mailbox("alice@example.org")


@pytest.fixture
def bob(db):
    return make_mailbox("bob@example.org")


def accepted(*addresses: str) -> list[submission.AcceptedRecipient]:
    return [submission.AcceptedRecipient(a, submission.check_recipient(a, accepted=i))
            for i, a in enumerate(addresses)]


WEB = submission.Origin(listener="webmail", peer_ip="127.0.0.1", tls=False)


def reply(error: MailhostError) -> str:
    return error.smtp_reply()[:9]


def test_submit_delivers_locally_queues_remote_signs_and_counts(alice, bob, settings):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 1
    publish_domain("example.org")
    sent = submission.submit_as_user(
        alice, sender="alice@example.org", recipients=accepted("bob@example.org",
                                                               "carol@example.net"),
        data=letter(), origin=WEB)
    assert (sent.local, sent.remote) == (1, 1)
    (local,) = stored("bob@example.org")
    assert local == sent.data and fakedns.dkim_verifies(local, 0)
    assert b"Message-ID: <" in local and b"Date: " in local  # RFC 6409 §8
    assert QueueEntry.objects.get().recipient == "carol@example.net"
    with pytest.raises(submission.SendingLimitReached) as refused:
        submission.check_sender(alice, "alice@example.org")
    assert reply(refused.value) == "450 4.7.1"


def test_sender_rules(alice, bob):
    directory.create_alias("sales@example.org", ["alice@example.org"])
    submission.check_sender(alice, "sales@example.org")
    submission.check_sender(alice, "alice+tag@example.org")
    with pytest.raises(SenderNotAllowed) as refused:
        submission.check_sender(alice, "bob@example.org")
    assert reply(refused.value) == "553 5.7.1"
    # The From field is checked too, and nothing is kept when it is refused.
    with pytest.raises(SenderNotAllowed):
        submission.submit_as_user(alice, sender="alice@example.org",
                                  recipients=accepted("bob@example.org"),
                                  data=letter("bob@example.org"), origin=WEB)
    assert stored("bob@example.org") == [] and not OutboundMessage.objects.exists()


def test_recipient_rules(alice, bob, settings):
    settings.MAILHOST_SUBMISSION_MAX_RECIPIENTS = 2
    with pytest.raises(submission.TooManyRecipients) as refused:
        submission.check_recipient("x@example.net", accepted=2)
    assert reply(refused.value) == "452 4.5.3"
    with pytest.raises(submission.UnknownRecipient) as refused:
        submission.check_recipient("nobody@example.org", accepted=0)
    assert reply(refused.value) == "550 5.1.1"
    assert "nobody@example.org" in refused.value.message
    with pytest.raises(submission.BadRecipient) as refused:
        submission.check_recipient("not an address", accepted=0)
    assert reply(refused.value) == "501 5.1.3"
    directory.update_mailbox(bob, active=False)
    with pytest.raises(Disabled):
        submission.check_recipient("bob@example.org", accepted=0)
    directory.update_mailbox(bob, active=True, quota=10)
    with pytest.raises(OverQuota):
        submission.check_recipient("bob@example.org", accepted=0, declared_size=100)


def test_size_limit(alice, bob, settings):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE = 100
    with pytest.raises(submission.MessageTooLarge) as refused:
        submission.submit_as_user(alice, sender="alice@example.org",
                                  recipients=accepted("bob@example.org"),
                                  data=letter() + b"x" * 100, origin=WEB)
    assert reply(refused.value) == "552 5.3.4" and stored("bob@example.org") == []


def test_both_front_ends_share_the_hourly_limit(mail_servers, transactional_db, settings,
                                                client_tls_context):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 2
    alice = make_mailbox("alice@example.org")
    make_mailbox("bob@example.org")
    writing.send(alice, writing.Letter(from_address="alice@example.org",
                                       to=["bob@example.org"], subject="web"), replacing=None,
                 origin=WEB)
    with smtplib.SMTP("localhost", mail_servers.port("submission")) as client:
        client.starttls(context=client_tls_context)
        client.login("alice@example.org", PASSWORD)
        client.sendmail("alice@example.org", ["bob@example.org"], letter())
        code, text = client.mail("alice@example.org")
    assert code == 450 and text.startswith(b"4.7.1")
    with pytest.raises(submission.SendingLimitReached):
        writing.send(alice, writing.Letter(from_address="alice@example.org",
                                           to=["bob@example.org"], subject="web 2"),
                     replacing=None, origin=WEB)
    assert len(stored("bob@example.org")) == 2


def test_mail_sent_from_the_webmail_is_traced_like_submission(alice, bob):
    sent = writing.send(alice, writing.Letter(from_address="alice@example.org",
                                              to=["bob@example.org", "carol@example.net"],
                                              subject="traced"),
                        replacing=None, origin=WEB)
    kinds = list(TraceEvent.objects.filter(queue_id=sent.queue_id)
                 .values_list("kind", flat=True))
    assert sorted(kinds) == ["filed", "queued", "submitted"]
    accepted = TraceEvent.objects.get(queue_id=sent.queue_id, kind=TraceKind.SUBMITTED)
    assert accepted.detail["listener"] == "webmail"
    assert accepted.detail["user"] == "alice@example.org"
    assert accepted.detail["recipients"] == ["bob@example.org", "carol@example.net"]


def test_messages_handed_over_together_each_count_against_the_hour(transactional_db, settings):
    # The listener prepares and counts the messages whose DATA ends at the same
    # moment as one batch: each still counts once, and a refused one not at all.
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 3
    alice = make_mailbox("alice@example.org")
    make_mailbox("bob@example.org")

    async def together(*froms: str) -> list[submission.Submitted | BaseException]:
        return await asyncio.gather(*(submission.asubmit_as_user(
            alice, sender="alice@example.org", recipients=accepted("bob@example.org"),
            data=letter(sender), origin=WEB) for sender in froms), return_exceptions=True)

    first = asyncio.run(together("alice@example.org", "bob@example.org", "alice@example.org"))
    assert isinstance(first[1], SenderNotAllowed)
    assert len(stored("bob@example.org")) == 2
    submission.check_sender(alice, "alice@example.org")  # 2 of 3 sent
    asyncio.run(together("alice@example.org"))
    with pytest.raises(submission.SendingLimitReached):
        submission.check_sender(alice, "alice@example.org")
