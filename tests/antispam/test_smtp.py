"""End to end over the real MX listener: what a sending server sees on the
wire and what lands in the mailbox."""

import hashlib
import smtplib
import time

import pytest
from django.core.cache import cache

from apps.antispam import bayes, learning
from apps.antispam.corpus import is_held_out, read_messages
from apps.antispam.models import SpooledMessage
from apps.directory.models import Domain
from tests.conftest import CORPORA
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored

TRAINING_FILES = 200  # of each class: enough for a verdict, bounded in time


def carriable(data: bytes) -> bool:
    """SMTP carries lines of at most 1000 octets (RFC 5321 §4.5.3.1.6)."""
    return max(map(len, data.split(b"\r\n"))) <= 998


def corpus_split(kind: str) -> tuple[list[bytes], list[bytes]]:
    files = list(read_messages(CORPORA / kind))
    train = [data for path, data in files if not is_held_out(path.name)]
    held = [data for path, data in files if is_held_out(path.name) and carriable(data)]
    step = max(1, len(train) // TRAINING_FILES)
    return train[::step][:TRAINING_FILES], held


@pytest.fixture
def bob(transactional_db):
    return make_mailbox("bob@example.org")


def test_corpus_spam_lands_in_junk_and_ham_in_inbox(smtp_port, bob, zone):
    spam_train, spam_held = corpus_split("spam")
    ham_train, ham_held = corpus_split("ham")
    model = learning.global_model()
    for batch, is_spam in ((spam_train, True), (ham_train, False)):
        learning.train(model, [learning.LabelledMessage(
            hashlib.sha256(d).hexdigest(), frozenset(bayes.tokenize(d))) for d in batch],
            is_spam=is_spam)
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        client.sendmail("spammer@sender.example", ["bob@example.org"], spam_held[0])
        client.sendmail("friend@sender.example", ["bob@example.org"], ham_held[0])
    (junk,) = stored("bob@example.org", "Junk")
    (inbox,) = stored("bob@example.org")
    assert junk.endswith(spam_held[0]) and inbox.endswith(ham_held[0])
    assert b"\r\nX-Spam-Status: Yes, score=" in junk
    assert b"\r\nX-Spam-Status: No, score=" in inbox
    for got in (junk, inbox):
        assert b"Authentication-Results: " in got and b"spf=none" in got
        assert b"X-Spam-Score: " in got


def test_blocklisted_client_is_refused(settings, smtp_port, bob, zone):
    settings.MAILHOST_DNSBL_ZONES = ["dnsbl.test", "bl.example"]
    zone.add("1.0.0.127.bl.example", "A", "127.0.0.2")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        code, text = client.mail("spammer@sender.example")
    assert (code, text) == (
        554, b"5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.example")
    assert stored("bob@example.org") == []


def test_unreachable_blocklist_blocks_nobody(settings, smtp_port, bob, zone):
    settings.MAILHOST_DNSBL_ZONES = ["bl.example"]
    zone.fail("1.0.0.127.bl.example", "A")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        assert client.sendmail("a@sender.example", ["bob@example.org"],
                               make_message("bob@example.org")) == {}


def test_greylisting_defers_the_first_attempt_then_accepts(settings, smtp_port, bob, zone):
    # A few seconds: on a loaded machine a second can pass between two RCPTs.
    settings.MAILHOST_GREYLIST_DELAY = 3
    Domain.objects.filter(name="example.org").update(greylisting=True)
    other = make_mailbox("ann@other.example")  # a domain without greylisting
    message = make_message("bob@example.org")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        client.mail("a@sender.example")
        assert client.rcpt("bob@example.org") == (
            451, b"4.7.1 Greylisted, please try again later")
        assert client.rcpt(other.address)[0] == 250
        client.rset()
        client.mail("a@sender.example")
        assert client.rcpt("bob@example.org")[0] == 451  # too soon
    time.sleep(3.1)
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        assert client.sendmail("a@sender.example", ["bob@example.org"], message) == {}
        # Known now: no more waiting for this triplet.
        assert client.sendmail("a@sender.example", ["bob@example.org"], message) == {}
    assert len(stored("bob@example.org")) == 2


def test_spf_fail_is_refused_when_configured(settings, smtp_port, bob, zone):
    settings.MAILHOST_SPF_FAIL_ACTION = "reject"
    zone.add("sender.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("softer.example", "TXT", "v=spf1 ip4:192.0.2.0/24 ~all")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        code, text = client.mail("forger@sender.example")
        assert code == 550 and text.startswith(b"5.7.23 SPF validation failed")
        assert client.sendmail("someone@softer.example", ["bob@example.org"],
                               make_message("bob@example.org")) == {}
    (got,) = stored("bob@example.org")
    assert b"spf=softfail smtp.mailfrom=someone@softer.example" in got


def test_spf_temperror_is_deferred_only_when_spf_rejection_is_on(settings, smtp_port, bob,
                                                                  zone):
    """RFC 7208 §8.6, RFC 7372 §3.2: a DNS failure during the SPF check is a
    temporary refusal when SPF failures are refused; marked mail goes through."""
    zone.fail("sender.example", "TXT")
    settings.MAILHOST_SPF_FAIL_ACTION = "reject"
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        assert client.mail("someone@sender.example") == (
            451, b"4.7.24 SPF validation error: DNS lookup failed, try again later")
    settings.MAILHOST_SPF_FAIL_ACTION = "mark"
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        assert client.sendmail("someone@sender.example", ["bob@example.org"],
                               make_message("bob@example.org")) == {}
    (got,) = stored("bob@example.org")
    assert b"spf=temperror smtp.mailfrom=someone@sender.example" in got


def test_connection_and_message_rate_limits(settings, smtp_port, bob, zone):
    settings.MAILHOST_RATE_LIMIT_EXEMPT = []
    settings.MAILHOST_RATE_CONNECTIONS_PER_MINUTE = 2
    settings.MAILHOST_RATE_MESSAGES_PER_MINUTE = 1
    # The limits count in fixed one-minute windows: start early in one, so that a
    # slow machine does not cross into the next window half-way through the test.
    if time.time() % 60 > 40:
        time.sleep(60.5 - time.time() % 60)
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("a.test")
        assert client.sendmail("a@sender.example", ["bob@example.org"],
                               make_message("bob@example.org")) == {}
        code, text = client.mail("a@sender.example")
        assert (code, text) == (450, b"4.7.1 Too many messages from your address, "
                                     b"try again later")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        assert client.ehlo("a.test")[0] == 250
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        code, text = client.helo("a.test")
        assert (code, text) == (421, b"4.7.0 Too many connections from your address, "
                                     b"try again later")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    cache.clear()
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        assert client.ehlo("a.test")[0] == 250


def test_with_no_worker_running_mail_is_filed_unchecked_when_time_is_up(settings, smtp_port,
                                                                       bob, zone):
    settings.MAILHOST_ANTISPAM_INLINE = False  # after-queue, and no worker runs here
    settings.MAILHOST_ANTISPAM_TIMEOUT = 1
    message = make_message("bob@example.org")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.sender.example")
        assert client.sendmail("a@sender.example", ["bob@example.org"], message) == {}
    assert SpooledMessage.objects.count() == 1  # durable before the 250
    deadline = time.monotonic() + 30
    while not stored("bob@example.org") and time.monotonic() < deadline:
        time.sleep(0.1)
    (got,) = stored("bob@example.org")
    assert got.endswith(message) and b"X-Spam-Status" not in got
    assert not SpooledMessage.objects.exists()
