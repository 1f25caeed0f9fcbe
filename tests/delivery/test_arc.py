"""ARC sealing (RFC 8617) of forwarded mail, end to end: a message arrives at
the real MX listener for an alias that points outside (or a mailbox whose
Sieve script redirects it), goes out through the queue to a receiving
server, and what that server got is verified with dkimpy's ARC verifier
against the fake DNS: our seal, over our Authentication-Results, with the
chain it came with."""

from __future__ import annotations

import base64
import smtplib

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from apps.delivery import arc
from apps.delivery.signing import dkim_sign
from apps.directory import services as directory
from apps.sieve import services as sieve
from tests import fakedns
from tests.delivery.conftest import publish_domain, run_queue
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message


def _key(domain: str, selector: str) -> str:
    """A new RSA key whose public half the fake DNS serves; its PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    fakedns.publish([f"{selector}._domainkey.{domain}. 300 IN TXT " + " ".join(
        f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))])
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def signed_by_sender() -> bytes:
    """A message DKIM-signed by its (remote) author's domain."""
    pem = _key("remote.example", "s1")
    return dkim_sign(make_message("fwd@example.org"), domain="remote.example", selector="s1",
                     private_key=pem)


@pytest.fixture
def forwarding(transactional_db, mail_servers, receiver):
    make_mailbox("alice@example.org")
    directory.create_alias("fwd@example.org", ["friend@example.net"])
    publish_domain("example.org")
    return mail_servers.port("smtp")


def _send(port: int, data: bytes, recipient: str = "fwd@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        assert client.sendmail("someone@remote.example", [recipient], data) == {}


def _verify(data: bytes) -> tuple[bytes, list[dict]]:
    cv, results, reason = dkim.arc_verify(data, dnsfunc=fakedns.txt_lookup)
    assert cv == dkim.CV_Pass, reason
    return cv, results


def _field(data: bytes, name: bytes) -> bytes:
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    return next(line for line in head.split(b"\r\n") if line.startswith(name + b":"))


def test_an_alias_forward_is_sealed_over_our_checks(forwarding, receiver, signed_by_sender):
    _send(forwarding, signed_by_sender)
    run_queue()
    (got,) = receiver.script.messages
    _, results = _verify(got.data)
    assert [r["instance"] for r in results] == [1]
    seal = _field(got.data, b"ARC-Seal")
    assert b"i=1;" in seal and b"cv=none" in seal and b"d=example.org" in seal
    # The AAR is what our checks found on arrival (authserv-id: our host name).
    results_field = _field(got.data, b"ARC-Authentication-Results")
    assert b"mail.mailhost.test" in results_field
    assert b"dkim=pass" in results_field and b"header.d=remote.example" in results_field
    # The sender's own signature still verifies beside ours.
    assert dkim.verify(got.data, dnsfunc=fakedns.txt_lookup)


def test_an_existing_chain_is_validated_and_extended(forwarding, receiver, signed_by_sender):
    # A first forwarder sealed it (instance 1) before it reached us.
    pem = _key("forwarder.example", "arc")
    stamped = (b"Authentication-Results: mx.forwarder.example; dkim=pass "
               b"header.d=remote.example\r\n" + signed_by_sender)
    first = b"".join(dkim.arc_sign(stamped, b"arc", b"forwarder.example", pem.encode(),
                                   b"mx.forwarder.example")) + stamped
    _send(forwarding, first)
    run_queue()
    (got,) = receiver.script.messages
    _, results = _verify(got.data)
    assert sorted(r["instance"] for r in results) == [1, 2]
    seal = _field(got.data, b"ARC-Seal")  # the newest is first
    assert b"i=2;" in seal and b"cv=pass" in seal and b"d=example.org" in seal
    assert b"arc=pass" in _field(got.data, b"ARC-Authentication-Results")


def test_a_broken_chain_is_sealed_as_failed(forwarding, receiver, signed_by_sender):
    pem = _key("forwarder.example", "arc")
    stamped = (b"Authentication-Results: mx.forwarder.example; dkim=pass\r\n"
               + signed_by_sender)
    first = b"".join(dkim.arc_sign(stamped, b"arc", b"forwarder.example", pem.encode(),
                                   b"mx.forwarder.example")) + stamped
    _send(forwarding, first.replace(b"Hi!", b"Changed on the way!"))
    run_queue()
    (got,) = receiver.script.messages
    seal = _field(got.data, b"ARC-Seal")
    assert b"i=2;" in seal and b"cv=fail" in seal  # RFC 8617 §5.1.1
    # The receiver sees a chain that failed before us, not one we vouch for.
    assert dkim.arc_verify(got.data, dnsfunc=fakedns.txt_lookup)[0] != dkim.CV_Pass


def test_a_sieve_redirect_is_sealed_for_the_mailboxes_domain(
        transactional_db, mail_servers, receiver, signed_by_sender):
    alice = make_mailbox("alice@example.org")
    sieve.put_script(alice, "phone", 'redirect "friend@example.net";')
    sieve.set_active(alice, "phone")
    publish_domain("example.org")
    _send(mail_servers.port("smtp"), signed_by_sender, "alice@example.org")
    run_queue()
    (got,) = receiver.script.messages
    _verify(got.data)
    assert b"d=example.org" in _field(got.data, b"ARC-Seal")
    assert b"dkim=pass" in _field(got.data, b"ARC-Authentication-Results")


def test_no_seal_without_our_results_or_an_rsa_key(transactional_db):
    make_mailbox("alice@example.org")
    message = make_message("friend@example.net")
    # No Authentication-Results of ours: nothing to vouch for.
    assert arc.seal(message, domain="example.org") == message
    stamped = b"Authentication-Results: mail.mailhost.test; spf=pass\r\n" + message
    assert arc.seal(stamped, domain="example.org", keys=[]) == stamped
    assert arc.seal(stamped, domain="example.org").startswith(b"ARC-Seal: i=1; cv=none")
