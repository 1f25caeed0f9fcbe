"""Provision through the API, then use the mailbox over real SMTP."""

import smtplib

import pytest

from apps.directory import services
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored

PASSWORD = "set through the api"


def rcpt(port: int, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.test")
        client.mail("sender@remote.example")
        return client.rcpt(address)


@pytest.mark.slow
def test_provision_then_deliver_and_log_in(transactional_db, as_root, smtp_port):
    response = as_root.post("/api/v1/domains/", {"name": "fresh.example"}, format="json")
    assert response.status_code == 201
    domain_id = response.json()["id"]
    response = as_root.post("/api/v1/mailboxes/", {
        "address": "new@fresh.example", "password": PASSWORD, "quota": 10_000_000},
        format="json")
    assert response.status_code == 201
    mailbox_id = response.json()["id"]

    message = make_message("new@fresh.example", subject="welcome")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        assert client.sendmail("sender@remote.example", ["new@fresh.example"], message) == {}
    (got,) = stored("new@fresh.example")
    assert got.endswith(message)
    assert as_root.get(f"/api/v1/mailboxes/{mailbox_id}/").json()["used_bytes"] == len(got)
    # The IMAP, POP3 and submission listeners log in through this same service.
    assert services.authenticate("new@fresh.example", PASSWORD, protocol="imap") is not None

    # RFC 3463 §3.3: X.2.1 "mailbox disabled, not accepting messages".
    as_root.patch(f"/api/v1/mailboxes/{mailbox_id}/", {"active": False}, format="json")
    code, text = rcpt(smtp_port, "new@fresh.example")
    assert code == 550 and text.startswith(b"5.2.1")
    assert services.authenticate("new@fresh.example", PASSWORD) is None

    as_root.patch(f"/api/v1/mailboxes/{mailbox_id}/", {"active": True}, format="json")
    assert rcpt(smtp_port, "new@fresh.example")[0] == 250
    as_root.patch(f"/api/v1/domains/{domain_id}/", {"active": False}, format="json")
    code, text = rcpt(smtp_port, "new@fresh.example")
    assert code == 550 and text.startswith(b"5.2.1")
    assert services.authenticate("new@fresh.example", PASSWORD) is None
    assert len(stored("new@fresh.example")) == 1


@pytest.mark.slow
def test_forwarding_set_by_the_user_applies_to_smtp_delivery(
        transactional_db, as_alice, alice, smtp_port):
    make_mailbox("bob@ours.example")
    response = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/",
                              {"forward_to": ["bob@ours.example"]}, format="json")
    assert response.status_code == 200
    message = make_message("alice@ours.example", subject="both of you")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        assert client.sendmail("sender@remote.example", ["alice@ours.example"], message) == {}
    assert [m.endswith(message) for m in stored("alice@ours.example")] == [True]
    assert [m.endswith(message) for m in stored("bob@ours.example")] == [True]

    as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", {"forward_keep_copy": False},
                   format="json")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.sendmail("sender@remote.example", ["alice@ours.example"], message)
    assert (len(stored("alice@ours.example")), len(stored("bob@ours.example"))) == (1, 2)
