"""Vacation auto-replies (RFC 3834): the webmail's, written as a Sieve
vacation action (apps/delivery/rules.py) and carried out by the filing seam
(apps/delivery/filing.py): each rule on its own, once per sender per N days,
and end to end over SMTP (MX with and without the checks, submission)."""

from __future__ import annotations

import email
import email.policy
import importlib
import smtplib
from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from apps.delivery import filing
from apps.delivery.models import OutboundMessage, Vacation, VacationReply
from apps.delivery.rules import GENERATED_NAME
from apps.delivery.vacation import set_vacation
from apps.directory import services as directory
from apps.sieve import services as sieve
from apps.store.blobs import get_blob_store
from apps.store.models import Message
from apps.store.services import DeliveryRequest
from tests import fakedns
from tests.delivery.conftest import publish_domain, run_queue
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import stored


def letter(*, sender: str = "bob@example.org", to: str = "alice@example.org",
           extra: str = "", subject: str = "Lunch?") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <m-{subject}@example.org>\r\nReferences: <earlier@example.org>\r\n"
            f"{extra}\r\nHow about noon?\r\n").encode()


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


@pytest.fixture
def alice(db):
    mailbox = make_mailbox("alice@example.org")
    directory.update_account(mailbox.user, display_name="Alice")
    set_vacation(mailbox, enabled=True, subject="", body="I am away until Monday.",
                 start=None, end=None)
    return mailbox


@pytest.fixture
def bob(db):
    return make_mailbox("bob@example.org")


def replies_to(address: str) -> list[email.message.EmailMessage]:
    return [parsed(data) for data in stored(address)]


def _replies() -> int:
    """Replies queued (remote senders) and filed (bob, the local one)."""
    return (OutboundMessage.objects.filter(sender="").count()
            + Message.objects.filter(folder__mailbox__address="bob@example.org").count())


def answer_absences(mailbox_ids: list[int], data: bytes, *, sender: str) -> int:
    """File a message as every delivery path does; how many replies went out."""
    before = _replies()
    (plans,) = filing.deliver_filed([filing.Filing(DeliveryRequest(mailbox_ids, data), sender)])
    filing.send_replies(plans)
    return _replies() - before


def test_one_reply_per_sender_per_interval(alice, bob, settings):
    settings.MAILHOST_VACATION_INTERVAL_DAYS = 7
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 1
    (reply,) = replies_to("bob@example.org")
    # RFC 3834 §3.1: auto-replied, threaded to the original, "Auto:" subject.
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["From"] == "Alice <alice@example.org>" and reply["To"] == "bob@example.org"
    assert reply["Subject"] == "Auto: Lunch?"
    assert reply["In-Reply-To"] == "<m-Lunch?@example.org>"
    assert reply["References"] == "<earlier@example.org> <m-Lunch?@example.org>"
    assert reply["DKIM-Signature"] is not None
    assert reply.get_content().strip() == "I am away until Monday."
    # Same sender again, even in other letter case: no second reply within the interval.
    assert answer_absences([alice.pk], letter(subject="again"), sender="Bob@Example.org") == 0
    # Past the interval, one more.
    VacationReply.objects.update(replied=timezone.now() - timedelta(days=8))
    assert answer_absences([alice.pk], letter(subject="later"), sender="bob@example.org") == 1
    assert len(replies_to("bob@example.org")) == 2


def test_the_users_subject_and_a_null_envelope_sender(alice):
    set_vacation(alice, enabled=True, subject="Out of office", body="Zurück am Montag.",
                 start=None, end=None)
    assert answer_absences([alice.pk], letter(sender="carol@remote.example"),
                           sender="carol@remote.example") == 1
    queued = OutboundMessage.objects.get()
    assert queued.sender == "", "RFC 3834 §3.3: the reply goes from the null sender"
    data = get_blob_store().read(queued.blob_id)
    assert data.isascii() and parsed(data).get_content().strip() == "Zurück am Montag."
    assert queued.entries.get().recipient == "carol@remote.example"


@pytest.mark.parametrize("sender", [
    "", "<>", "MAILER-DAEMON@example.org", "owner-list@example.org",
    "list-request@example.org"])
def test_no_reply_to_automatic_senders(alice, bob, sender):
    assert answer_absences([alice.pk], letter(), sender=sender) == 0
    assert replies_to("bob@example.org") == []


@pytest.mark.parametrize("field", [
    "List-Id: <team.example.org>", "List-Unsubscribe: <mailto:leave@example.org>",
    "Precedence: bulk", "Precedence: list", "Precedence: junk",
    "Auto-Submitted: auto-generated", "Auto-Submitted: auto-replied"])
def test_no_reply_to_lists_bulk_and_automatic_messages(alice, bob, field):
    assert answer_absences([alice.pk], letter(extra=field + "\r\n"),
                           sender="bob@example.org") == 0
    assert replies_to("bob@example.org") == []


def test_auto_submitted_no_is_a_person(alice, bob):
    assert answer_absences([alice.pk], letter(extra="Auto-Submitted: no\r\n"),
                           sender="bob@example.org") == 1


def test_only_when_the_user_is_in_to_or_cc(alice, bob):
    directory.create_alias("sales@example.org", ["alice@example.org"])
    assert answer_absences([alice.pk], letter(to="team@lists.example"),
                           sender="bob@example.org") == 0
    assert answer_absences([alice.pk], letter(to="x@y.example\r\nCc: Sales <sales@example.org>"),
                           sender="bob@example.org") == 1
    VacationReply.objects.all().delete()
    assert answer_absences([alice.pk], letter(to="alice+news@example.org"),
                           sender="bob@example.org") == 1


def test_only_between_the_dates_and_when_on(alice, bob):
    today = timezone.localdate()
    set_vacation(alice, enabled=True, subject="", body="Away.", start=today + timedelta(days=1),
                 end=None)
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 0
    set_vacation(alice, enabled=True, subject="", body="Away.", start=None,
                 end=today - timedelta(days=1))
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 0
    set_vacation(alice, enabled=False, subject="", body="Away.", start=None, end=None)
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 0
    set_vacation(alice, enabled=True, subject="", body="Away.", start=today, end=today)
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 1


def test_no_script_costs_one_query(alice, bob, django_assert_num_queries):
    request = DeliveryRequest([bob.pk], letter(to="bob@example.org"))
    with django_assert_num_queries(1):
        routed = filing.route([request], senders=["carol@remote.example"])
    assert routed.requests == [request] and routed.plans == []


# --- end to end over SMTP ------------------------------------------------------------


@pytest.fixture
def away(transactional_db):
    mailbox = make_mailbox("alice@example.org")
    set_vacation(mailbox, enabled=True, subject="Away", body="Back soon.", start=None,
                 end=None)
    publish_domain("example.org")
    return mailbox


def send_mx(port: int, sender: str, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.test")
        assert client.sendmail(sender, ["alice@example.org"], message) == {}


@pytest.mark.parametrize("antispam", [True, False], ids=["checked", "unchecked"])
def test_over_smtp_one_reply_then_none_and_none_to_a_list(
        mail_servers, away, receiver, settings, antispam):
    settings.MAILHOST_ANTISPAM = antispam
    port = mail_servers.port("smtp")
    send_mx(port, "dave@example.net", letter(sender="dave@example.net", subject="one"))
    send_mx(port, "dave@example.net", letter(sender="dave@example.net", subject="two"))
    send_mx(port, "news-bounces@example.net", letter(
        sender="news@example.net", subject="news", extra="List-Id: <news.example.net>\r\n"))
    assert len(stored("alice@example.org")) == 3
    run_queue()
    (reply,) = receiver.script.messages
    # RFC 3834 §3.3: the null sender, "<>" on the wire.
    assert reply.mail_from == "<>" and reply.recipients == ["dave@example.net"]
    message = parsed(reply.data)
    assert message["Subject"] == "Away" and message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<m-one@example.org>"
    assert fakedns.dkim_verifies(reply.data, 0)


def test_no_reply_for_mail_filed_into_junk(mail_servers, away, receiver):
    # Below any score (the settings page would not allow it): everything is spam.
    away.spam_threshold = -1000.0
    away.save(update_fields=["spam_threshold"])
    send_mx(mail_servers.port("smtp"), "dave@example.net", letter(sender="dave@example.net"))
    assert stored("alice@example.org", "Junk") and not stored("alice@example.org")
    run_queue()
    assert receiver.script.messages == []


def test_local_submission_to_a_user_away(mail_servers, away, client_tls_context):
    make_mailbox("bob@example.org")
    with smtplib.SMTP("localhost", mail_servers.port("submission")) as client:
        client.starttls(context=client_tls_context)
        client.login("bob@example.org", PASSWORD)
        client.sendmail("bob@example.org", ["alice@example.org"], letter())
    (reply,) = replies_to("bob@example.org")
    assert reply["Subject"] == "Away" and reply["Auto-Submitted"] == "auto-replied"


# --- the auto-replies set before they were Sieve ------------------------------------


def test_the_migration_writes_the_replies_that_are_on_into_scripts(db, bob):
    """delivery.0004: an auto-reply that was on keeps answering, as Sieve."""
    write_scripts = importlib.import_module(
        "apps.delivery.migrations.0004_vacations_as_sieve").write_scripts
    alice, carol = make_mailbox("alice@example.org"), make_mailbox("carol@example.org")
    own = 'require "fileinto";\r\nfileinto "Mine";\r\n'
    sieve.put_script(carol, "own", own)
    sieve.set_active(carol, "own")
    # Rows as the webmail left them before (no script written).
    Vacation.objects.create(mailbox=alice, enabled=True, subject="Away", body="Back soon.")
    Vacation.objects.create(mailbox=carol, enabled=True, body="Out.")
    Vacation.objects.create(mailbox=bob, enabled=False, body="Not on.")
    write_scripts(django_apps, None)
    assert sieve.get_script(alice, GENERATED_NAME).active
    assert sieve.list_scripts(bob) == []
    mine = sieve.get_script(carol, "own").content  # the user's own, with the section
    assert mine.startswith('require "fileinto";\r\n# BEGIN') and mine.endswith(
        'fileinto "Mine";\r\n')
    assert answer_absences([alice.pk], letter(), sender="bob@example.org") == 1
    assert answer_absences([carol.pk], letter(to="carol@example.org"),
                           sender="bob@example.org") == 1
