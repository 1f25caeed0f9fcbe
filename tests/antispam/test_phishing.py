"""The phishing rules end to end: built samples sent to the real MX listener
with smtplib, checked and filed as the worker does; what X-Spam-Status names,
which folder the mail lands in, and what the admin panel's trace records."""

import re
import smtplib
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.antispam import services
from apps.antispam.models import FirstSeenDomain
from apps.store.models import TraceEvent, TraceKind
from tests.antispam import phishing_samples as samples
from tests.antispam.conftest import DkimSigner
from tests.factories import make_mailbox
from tests.smtp.helpers import stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bob(transactional_db):
    mailbox = make_mailbox("bob@example.org")
    mailbox.user.display_name = "Bob Boss"
    mailbox.user.save()
    return mailbox


def send(port: int, data: bytes, mail_from: str = "bounce@sender.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.sender.example")
        client.sendmail(mail_from, ["bob@example.org"], data)


def status_of(data: bytes) -> tuple[str, list[str]]:
    """(Yes/No, the tests) of the X-Spam-Status field our filter wrote."""
    match = re.search(rb"\r\nX-Spam-Status: (Yes|No), score=\S+ required=\S+ tests=(\S*)\r\n",
                      data)
    assert match, data[:600]
    return match.group(1).decode(), match.group(2).decode().split(",")


def only_message(address: str) -> tuple[str, bytes]:
    """The folder and bytes of the one message the mailbox has."""
    found = [(folder, data) for folder in ("INBOX", "Junk") for data in stored(address, folder)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("sample", "tests", "folder"), [
    (samples.LOOKALIKE, ["FROM_LOOKALIKE_DOMAIN"], "INBOX"),
    (samples.DISPLAY_NAME, ["FROM_NAME_IMITATES_DOMAIN"], "INBOX"),
    (samples.LINK_MISMATCH, ["LINK_TEXT_MISMATCH", "LINK_TO_IP"], "INBOX"),
    (samples.ATTACHMENTS, ["ATTACH_EXECUTABLE", "ATTACH_MACRO", "ATTACH_DOUBLE_EXTENSION"],
     "Junk"),
    (samples.ENCRYPTED, ["ATTACH_EXECUTABLE", "ATTACH_ENCRYPTED_ARCHIVE"], "Junk"),
    (samples.REPLY_TO, ["FORGED_LOCAL_SENDER", "REPLY_TO_OUTSIDE"], "INBOX"),
    (samples.HAM, [], "INBOX"),
], ids=["lookalike", "display-name", "link-mismatch", "attachments", "encrypted", "reply-to",
        "ham"])
def test_each_sample_is_named_and_filed(smtp_port, bob, zone, sample, tests, folder):
    send(smtp_port, sample)
    got_folder, data = only_message("bob@example.org")
    verdict, names = status_of(data)
    assert names == ["BAYES_UNTRAINED", *tests]
    assert (got_folder, verdict) == (folder, "Yes" if folder == "Junk" else "No")
    assert data.endswith(sample)  # the message itself is not rewritten
    (event,) = TraceEvent.objects.filter(kind=TraceKind.VERDICT)
    assert event.detail["tests"] == tests


def test_a_phish_with_a_homograph_sender_and_a_lying_link_is_junked(smtp_port, bob, zone,
                                                                    dkim_signer):
    # The attacker signs for the lookalike domain: DKIM passes, and proves nothing.
    signer: DkimSigner = dkim_signer(samples.HOMOGRAPH_ACE)
    phish = signer.sign(samples.build(
        sender=f"Bob Boss <bob@{samples.HOMOGRAPH_ACE}>", subject="Wire transfer",
        text="Please approve the transfer today.",
        html='<p>Approve it at <a href="http://203.0.113.9/approve">'
             "https://intranet.example.org/approve</a></p>"))
    send(smtp_port, phish, mail_from=f"bob@{samples.HOMOGRAPH_ACE}")
    folder, data = only_message("bob@example.org")
    assert folder == "Junk"
    assert b"dkim=pass header.d=" + samples.HOMOGRAPH_ACE.encode() in data
    assert status_of(data) == ("Yes", ["BAYES_UNTRAINED", "FROM_LOOKALIKE_DOMAIN",
                                       "FROM_NAME_IMITATES_USER", "LINK_TEXT_MISMATCH",
                                       "LINK_TO_IP"])


def test_a_user_display_name_from_outside(smtp_port, bob, zone):
    send(smtp_port, samples.build(sender="bob boss <ceo.office@freemail.example>",
                                  subject="Urgent", text="Are you free? I need a favour."))
    _, data = only_message("bob@example.org")
    assert status_of(data) == ("No", ["BAYES_UNTRAINED", "FROM_NAME_IMITATES_USER"])


def test_a_display_name_with_wildcard_characters_imitates_no_user(smtp_port, bob, zone):
    # SQL LIKE would take "%" and "_" as any characters: "Bob_Bos%" is nobody's name.
    send(smtp_port, samples.build(sender="Bob_Bos% <ceo.office@freemail.example>",
                                  subject="Urgent", text="Are you free? I need a favour."))
    _, data = only_message("bob@example.org")
    assert status_of(data) == ("No", ["BAYES_UNTRAINED"])


def test_links_to_domains_first_seen_lately(smtp_port, bob, zone, settings):
    settings.MAILHOST_PHISHING_FRESH_DAYS = 7
    # A new server has seen nothing for long: no domain counts as fresh yet.
    send(smtp_port, samples.HAM)
    assert status_of(only_message("bob@example.org")[1])[1] == ["BAYES_UNTRAINED"]
    assert FirstSeenDomain.objects.filter(name="friend.example").exists()
    # Watching for more than a week: friend.example is known of old, and a
    # domain new this week is fresh.
    long_ago = timezone.now() - timedelta(days=30)
    FirstSeenDomain.objects.update(first_seen=long_ago)
    stored_before = len(stored("bob@example.org"))
    send(smtp_port, samples.build(
        subject="Photos again", text="https://photos.friend.example/album/13 and "
                                     "https://login.newly-registered.example/x"))
    messages = stored("bob@example.org")
    assert len(messages) == stored_before + 1
    assert status_of(messages[-1])[1] == ["BAYES_UNTRAINED", "LINK_FRESH_DOMAIN"]
    assert FirstSeenDomain.objects.get(name="newly-registered.example").first_seen > long_ago
    send(smtp_port, samples.build(subject="Photos", text="https://photos.friend.example/a/14"))
    assert status_of(stored("bob@example.org")[-1])[1] == ["BAYES_UNTRAINED"]


def test_each_message_of_a_batch_gets_its_own_verdict(bob, zone, settings):
    # The rules' database reads are made once for a batch: the answers must
    # still go to the messages they are about.
    settings.MAILHOST_ANTISPAM_INLINE = True  # spooled only: filed below, in one batch
    settings.MAILHOST_PHISHING_FRESH_DAYS = 7
    FirstSeenDomain.objects.create(name="friend.example",
                                   first_seen=timezone.now() - timedelta(days=30))
    sent = [samples.build(sender="bob boss <ceo.office@freemail.example>", subject="Urgent",
                          text="Are you free? I need a favour."),
            samples.build(subject="Photos", text="https://photos.friend.example/a/14"),
            samples.build(subject="New", text="https://login.newly-registered.example/x"),
            samples.build(sender="Carol <carol@freemail.example>", subject="Lunch",
                          text="See https://login.newly-registered.example/y")]
    facts = services.SmtpFacts(client_ip="192.0.2.10", helo="mx.sender.example",
                               mail_from="bounce@sender.example", spf=None)
    pks = services.spool_batch([services.SpoolRequest(data, [bob.pk], facts) for data in sent])

    assert services.file_spooled_batch(pks) == pks

    assert [status_of(data)[1] for data in stored("bob@example.org")] == [
        ["BAYES_UNTRAINED", "FROM_NAME_IMITATES_USER"], ["BAYES_UNTRAINED"],
        ["BAYES_UNTRAINED", "LINK_FRESH_DOMAIN"], ["BAYES_UNTRAINED", "LINK_FRESH_DOMAIN"]]


def test_dmarc_failure_of_a_domain_with_a_policy_of_none(smtp_port, bob, zone):
    zone.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=none")
    send(smtp_port, samples.build(sender="Bank <notice@bank.example>", text="Hello"),
         mail_from="x@elsewhere.example")
    folder, data = only_message("bob@example.org")
    assert folder == "INBOX"
    assert status_of(data)[1] == ["BAYES_UNTRAINED", "DMARC_FAIL"]
    assert b"dmarc=fail header.from=bank.example policy.dmarc=none" in data


def test_a_senders_own_clues_and_status_are_dropped(smtp_port, bob, zone):
    forged = samples.build(subject="Hello", text="Hi Bob").replace(
        b"Subject: Hello\r\n",
        b"Subject: Hello\r\nX-Spam-Clues: trust=0.01\r\nX-Spam-Status: No, tests=TRUSTED\r\n")
    send(smtp_port, forged)
    _, data = only_message("bob@example.org")
    assert b"trust=0.01" not in data and b"TRUSTED" not in data
    assert status_of(data) == ("No", ["BAYES_UNTRAINED"])
