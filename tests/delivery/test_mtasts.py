"""MTA-STS enforced on outbound delivery, end to end: a policy served over
HTTPS by a local server whose certificate comes from a test CA, the
``_mta-sts`` TXT, MX and address records from the fake DNS, and receivers
with and without STARTTLS (RFC 8461 §3, §4, §5)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec, submit
from tests import fakedns
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.delivery.tls_peers import DOMAIN, MX_HOST, LocalCA
from tests.smtp.helpers import make_message, stored


@pytest.fixture(scope="module")
def clear_receiver() -> Iterator[Receiver]:
    """An MX that offers no STARTTLS."""
    server = Receiver(None).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_receiver(ca: LocalCA) -> Iterator[Receiver]:
    """An MX with a certificate for mx.example.net from the test CA."""
    server = Receiver(ca.server_context(MX_HOST)).start()
    yield server
    server.stop()


def send(recipient: str = f"carol@{DOMAIN}") -> None:
    data = make_message(recipient).replace(b"From: sender@remote.example",
                                           b"From: alice@example.org")
    submit(sender="alice@example.org", recipients=[RecipientSpec(recipient)], data=data)


def test_enforce_defers_delivery_in_clear_and_bounces_after_the_lifetime(
        sts, settings, clear_receiver):
    settings.MAILHOST_DELIVERY_PORT = clear_receiver.port
    settings.MAILHOST_QUEUE_LIFETIME = 3600
    sts("enforce")
    before = len(clear_receiver.script.messages)
    send()
    start = timezone.now()
    run_queue()
    entry = QueueEntry.objects.get()
    assert entry.last_reply.startswith("451 4.7.4")
    assert "MTA-STS" in entry.last_reply and MX_HOST in entry.last_reply
    assert len(clear_receiver.script.messages) == before  # nothing went out in clear
    # The queue's lifetime over: the sender gets a bounce with that reason.
    expired = start + timedelta(hours=1, minutes=1)
    QueueEntry.objects.update(next_attempt=expired)
    run_queue(now=expired)
    assert not QueueEntry.objects.exists()
    (bounce,) = stored("alice@example.org")
    assert b"Action: failed" in bounce and b"451 4.7.4" in bounce


def test_testing_mode_delivers_in_clear(sts, settings, clear_receiver, caplog):
    settings.MAILHOST_DELIVERY_PORT = clear_receiver.port
    sts("testing")
    before = len(clear_receiver.script.messages)
    send()
    run_queue()
    assert not QueueEntry.objects.exists()
    assert len(clear_receiver.script.messages) == before + 1
    assert clear_receiver.script.messages[-1].tls is False
    assert "took mail without STARTTLS" in caplog.text


def test_enforce_delivers_over_verified_tls_and_caches_the_policy(
        sts, settings, tls_receiver, policy_server):
    settings.MAILHOST_DELIVERY_PORT = tls_receiver.port
    sts("enforce")
    before = len(tls_receiver.script.messages)
    send()
    send("dave@example.net")
    run_queue()
    run_queue()
    assert not QueueEntry.objects.exists()
    assert len(tls_receiver.script.messages) > before
    assert all(m.tls for m in tls_receiver.script.messages[before:])
    assert policy_server.requests == 1  # RFC 8461 §5: cached while the id stays the same
    # A new id in the TXT record: fetched again (now forbidding this MX).
    fakedns.ZONE[fakedns.key(f"_mta-sts.{DOMAIN}", "TXT")] = ["v=STSv1; id=second"]
    sts("enforce", mx="*.elsewhere.example")
    send()
    run_queue()
    assert policy_server.requests == 2
    entry = QueueEntry.objects.get()
    assert entry.last_reply.startswith("451 4.7.0") and MX_HOST in entry.last_reply
    # The policy host down and the TXT record gone: the cached policy still holds.
    policy_server.policy = b""
    del fakedns.ZONE[fakedns.key(f"_mta-sts.{DOMAIN}", "TXT")]
    QueueEntry.objects.update(next_attempt=timezone.now())
    run_queue()
    assert QueueEntry.objects.get().last_reply.startswith("451 4.7.0")


def test_enforce_refuses_an_mx_not_in_the_policy(sts, settings, tls_receiver):
    settings.MAILHOST_DELIVERY_PORT = tls_receiver.port
    sts("enforce", mx="*.mail.example.net")
    connections = tls_receiver.script.connections
    send()
    run_queue()
    entry = QueueEntry.objects.get()
    assert entry.last_reply.startswith("451 4.7.0")
    assert "*.mail.example.net" in entry.last_reply
    assert tls_receiver.script.connections == connections  # not even connected


def test_enforce_refuses_a_certificate_for_another_name(sts, settings, ca):
    receiver = Receiver(ca.server_context("other.example.net")).start()
    try:
        settings.MAILHOST_DELIVERY_PORT = receiver.port
        sts("enforce")
        send()
        run_queue()
        reply = QueueEntry.objects.get().last_reply
        assert reply.startswith("451 4.7.5") and "certificate" in reply
        assert receiver.script.messages == []
    finally:
        receiver.stop()


def test_a_policy_not_text_plain_or_from_an_untrusted_host_is_no_policy(
        sts, settings, clear_receiver, policy_server, tmp_path):
    settings.MAILHOST_DELIVERY_PORT = clear_receiver.port
    sts("enforce")
    policy_server.content_type = "text/html"
    before = len(clear_receiver.script.messages)
    send()
    run_queue()
    assert not QueueEntry.objects.exists()
    assert len(clear_receiver.script.messages) == before + 1
    # RFC 8461 §3.3: a policy host whose certificate does not verify serves no policy.
    policy_server.content_type = "text/plain"
    settings.MAILHOST_MTA_STS_CA_FILE = str(LocalCA(tmp_path).path)  # another CA
    requests = policy_server.requests
    send()
    run_queue()
    assert not QueueEntry.objects.exists()
    assert len(clear_receiver.script.messages) == before + 2
    assert policy_server.requests == requests  # the handshake failed before any request
