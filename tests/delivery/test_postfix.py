"""Debian's Postfix as the receiving peer: it accepts what Mailhost sends, over
STARTTLS, with a DKIM signature that still verifies in the delivered copy."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator

import pytest

from apps.delivery.models import QueueEntry
from apps.mailservers.tls import certificate_paths
from tests.conftest import require_program
from tests.delivery.conftest import publish_domain, run_queue
from tests.delivery.postfix import Postfix
from tests.factories import PASSWORD, make_mailbox
from tests.fakedns import dkim_verifies
from tests.smtp.helpers import stored

pytestmark = pytest.mark.slow


@pytest.fixture
def postfix(settings) -> Iterator[Postfix]:
    require_program("postfix")
    cert, key = certificate_paths()
    server = Postfix(domains=["example.net"], cert=cert, key=key).start()
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{server.port}"
    yield server
    server.stop()


def test_postfix_accepts_signed_mail_and_refuses_one_recipient(
        mail_servers, postfix, client_tls_context):
    make_mailbox("alice@example.org")
    publish_domain("example.org")
    message = (b"From: Alice <alice@example.org>\r\nTo: carol@example.net\r\n"
               b"Subject: to postfix\r\n\r\nHello Postfix.\r\n")
    with smtplib.SMTP("localhost", mail_servers.port("submission")) as client:
        client.starttls(context=client_tls_context)
        client.login("alice@example.org", PASSWORD)
        refused = client.sendmail("alice@example.org",
                                  ["carol@example.net", "refused@example.net"], message)
    assert refused == {}
    run_queue()
    assert not QueueEntry.objects.exists(), postfix.log()

    (delivered,) = postfix.wait_delivered(1)
    assert b"Hello Postfix." in delivered
    assert b"with ESMTPS id" in delivered, "Postfix saw STARTTLS"
    assert b"Delivered-To: carol@example.net" in delivered
    signed = delivered.replace(b"\n", b"\r\n")
    assert dkim_verifies(signed, 0) and dkim_verifies(signed, 1)

    # Postfix's 550 for the other recipient came back to Alice as a report.
    (report,) = (email.message_from_bytes(raw, policy=email.policy.compat32)
                 for raw in stored("alice@example.org"))
    status = report.get_payload()[1].get_payload()[1]
    assert status["Final-Recipient"] == "rfc822; refused@example.net"
    assert status["Action"] == "failed" and status["Status"] == "5.1.1"
    assert status["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
