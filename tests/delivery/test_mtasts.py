"""MTA-STS enforced on outbound delivery, end to end: a policy served over
HTTPS by a local server whose certificate comes from a test CA, the
``_mta-sts`` TXT, MX and address records from the fake DNS, and receivers
with and without STARTTLS (RFC 8461 §3, §4, §5)."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.utils import timezone

from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec, submit
from tests import fakedns
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored

DOMAIN = "example.net"
MX_HOST = "mx.example.net"


class LocalCA:
    """A certificate authority of our own, trusted through MAILHOST_MTA_STS_CA_FILE."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mailhost test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context with a certificate for ``names`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        cert_path, key_path = self.directory / f"{names[0]}.pem", self.directory / f"{names[0]}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context


class PolicyServer:
    """https://mta-sts.example.net/.well-known/mta-sts.txt on 127.0.0.1."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.policy = b""
        self.content_type = "text/plain"
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if self.path != "/.well-known/mta-sts.txt" or not server.policy:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(server.policy)))
                self.end_headers()
                self.wfile.write(server.policy)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def policy_server(ca: LocalCA) -> Iterator[PolicyServer]:
    server = PolicyServer(ca.server_context(f"mta-sts.{DOMAIN}"))
    yield server
    server.stop()


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


@pytest.fixture
def sts(settings, ca: LocalCA, policy_server: PolicyServer, db):
    """example.net publishes an MTA-STS record and policy; each test sets the mode."""
    settings.MAILHOST_TRANSPORTS = ""
    settings.MAILHOST_MTA_STS_CA_FILE = str(ca.path)
    settings.MAILHOST_MTA_STS_FETCH_PORT = policy_server.port
    fakedns.publish([f"{DOMAIN}. 3600 IN MX 10 {MX_HOST}.",
                     f"{MX_HOST}. 3600 IN A 127.0.0.1",
                     f"mta-sts.{DOMAIN}. 3600 IN A 127.0.0.1",
                     f'_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=first"'])
    policy_server.requests = 0
    policy_server.content_type = "text/plain"
    make_mailbox("alice@example.org")

    def publish(mode: str, mx: str = MX_HOST) -> None:
        policy_server.policy = (f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\n"
                                f"max_age: 86400\r\n").encode()
    return publish


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
