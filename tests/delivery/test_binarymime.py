"""BINARYMIME on the way out (RFC 3030 §3): a binary message is sent with
BDAT, every octet as it came, to a server that offers CHUNKING and
BINARYMIME (our own MX listener here); to one that does not (aiosmtpd's
default, the test receiver) it is not sent at all and the sender gets a
report, since Mailhost does not convert binary MIME."""

from __future__ import annotations

import smtplib

from apps.delivery.client import DeliverySession, OutgoingMessage, OutgoingRecipient
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.sieve import services as sieve
from apps.store.blobs import get_blob_store
from tests.delivery.conftest import run_queue
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import send_chunked, stored
from tests.smtp.test_chunking import BINARY_MESSAGE


def test_the_client_sends_a_binary_body_with_bdat(transactional_db, mail_servers):
    make_mailbox("alice@example.org")
    session = DeliverySession("localhost", "127.0.0.1", mail_servers.port("smtp"),
                              helo="client.test", timeout=10)
    message = OutgoingMessage(sender="sender@remote.example", data=BINARY_MESSAGE,
                              recipients=[OutgoingRecipient("alice@example.org")],
                              binarymime=True)
    assert session.send([message]) == 1
    session.close()
    assert message.recipients[0].reply.startswith("250 2.0.0 OK")
    (got,) = stored("alice@example.org")
    assert got.endswith(BINARY_MESSAGE)


def test_a_peer_without_binarymime_gets_nothing_and_the_sender_a_report(
        transactional_db, mail_servers, receiver):
    make_mailbox("alice@example.org")
    message = BINARY_MESSAGE.replace(b"From: sender@remote.example",
                                     b"From: alice@example.org").replace(
        b"To: alice@example.org", b"To: carol@example.net")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("submission")) as client:
        client.ehlo("client.test")
        client.login("alice@example.org", PASSWORD)
        assert send_chunked(client, "alice@example.org", "carol@example.net", message,
                            binary=True)[0] == 250
    queued = OutboundMessage.objects.get()
    assert queued.binarymime
    run_queue()
    assert receiver.script.messages == []
    assert not QueueEntry.objects.exists()
    (report,) = stored("alice@example.org")
    assert b"Action: failed" in report and b"Status: 5.6.3" in report
    # Its header comes back, not the binary body (no binary MIME in a report).
    assert b"Subject: binary" in report and bytes(range(256)) not in report


def test_a_sieve_redirect_of_a_binary_message_keeps_it_binary(
        transactional_db, mail_servers, receiver):
    alice = make_mailbox("alice@example.org")
    sieve.put_script(alice, "copy", 'require "copy"; redirect :copy "friend@example.net";')
    sieve.set_active(alice, "copy")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        client.ehlo("client.test")
        assert send_chunked(client, "sender@remote.example", "alice@example.org",
                            BINARY_MESSAGE, binary=True)[0] == 250
    queued = OutboundMessage.objects.get()
    # Tagged, and not re-encoded for long lines (RFC 3030 §3: every octet kept).
    assert queued.binarymime
    assert get_blob_store().read(queued.blob_id).endswith(BINARY_MESSAGE)
