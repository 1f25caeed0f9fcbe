"""Certificates from Debian's pebble over ACME (RFC 8555), http-01 answered by
the real web server and dns-01 through a hook, served by the real IMAPS and
submission listeners and renewed under them: a new connection gets the new
certificate without a restart."""

from __future__ import annotations

import io
import json
import smtplib
import socket
import ssl
import stat
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command

from apps.certificates import tasks
from apps.certificates.models import IssuedCertificate
from tests.certificates.pebble import Pebble
from tests.conftest import ServerThread
from tests.dns_server import TinyDnsServer
from tests.factories import make_domain

pytestmark = pytest.mark.slow

HOSTNAME = "mail.ours.example"


class Zone(Mapping):
    """The DNS server's records: our names' addresses, and the TXT records
    that the DNS hook (dns_hook.py) keeps in a file."""

    def __init__(self, txt_file: Path) -> None:
        self.txt_file = txt_file

    def _records(self) -> dict[tuple[str, str], list[str]]:
        records = {(f"{name}.", "A"): ["127.0.0.1"]
                   for name in (HOSTNAME, "mta-sts.ours.example")}
        if self.txt_file.exists():
            for name, values in json.loads(self.txt_file.read_text()).items():
                records[name, "TXT"] = [f'"{value}"' for value in values]
        return records

    def __getitem__(self, key: tuple[str, str]) -> list[str]:
        return self._records()[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._records())

    def __len__(self) -> int:
        return len(self._records())


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[TinyDnsServer]:
    server = TinyDnsServer(Zone(tmp_path / "txt.json"))  # type: ignore[arg-type]
    yield server
    server.close()


@pytest.fixture
def pebble(tmp_path: Path, web_server, dns: TinyDnsServer, settings) -> Iterator[Pebble]:
    """Pebble validating http-01 against the real web server, and ACME on
    against it for MAILHOST_HOSTNAME and mta-sts.<domain>."""
    server = Pebble(tmp_path, http_port=web_server.port, dns_port=dns.port)
    settings.DATA_DIR = tmp_path
    settings.MAILHOST_HOSTNAME = HOSTNAME
    settings.MAILHOST_ACME_DIRECTORY = server.directory
    settings.MAILHOST_ACME_CA_BUNDLE = str(server.tls_cert)
    settings.MAILHOST_ACME_EMAIL = "postmaster@ours.example"
    settings.MAILHOST_ACME_NAMES = ["mta-sts.{domain}"]
    settings.MAILHOST_TLS_CERT = str(tmp_path / "tls" / "cert.pem")
    settings.MAILHOST_TLS_KEY = str(tmp_path / "tls" / "key.pem")
    yield server
    server.stop()


def certificate(command: str) -> str:
    out = io.StringIO()
    call_command("certificate", command, stdout=out)
    return out.getvalue()


def served_over_imaps(port: int, trust: ssl.SSLContext) -> x509.Certificate:
    """The certificate an IMAPS client checks, host name included, and the greeting."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            trust.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
        assert tls.recv(1024).startswith(b"* OK")
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def served_over_starttls(port: int, trust: ssl.SSLContext) -> x509.Certificate:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=trust)
        assert client.ehlo()[0] == 250
        return x509.load_der_x509_certificate(client.sock.getpeercert(binary_form=True))


def test_issued_served_and_renewed_without_a_restart(pebble: Pebble, ours, tmp_path: Path,
                                                      web_server, settings):
    assert "due: no certificate yet" in certificate("status")
    # What the CA asks for is answered whatever the Host, and nothing else is.
    unknown = urllib.request.Request(  # noqa: S310
        f"{web_server.url}/.well-known/acme-challenge/unknown",
        headers={"Host": "mta-sts.elsewhere.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unknown, timeout=10)  # noqa: S310
    assert refused.value.code == 404
    output = certificate("issue")
    assert f"names: {HOSTNAME}, mta-sts.ours.example" in output
    assert "ok: valid for" in output
    # The private keys are the owner's alone.
    for key in (tmp_path / "tls" / "key.pem", tmp_path / "acme" / "account-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    trust = ssl.create_default_context(cadata=pebble.root().public_bytes(
        serialization.Encoding.PEM).decode())
    # smtplib checks the address it dialled, not the name: the chain is checked.
    starttls_trust = ssl.create_default_context(cadata=pebble.root().public_bytes(
        serialization.Encoding.PEM).decode())
    starttls_trust.check_hostname = False
    servers = ServerThread(["imaps", "submission"]).start()
    try:
        first = served_over_imaps(servers.port("imaps"), trust)
        first.verify_directly_issued_by(pebble.intermediate())
        assert served_over_starttls(servers.port("submission"), starttls_trust) == first
        # An open connection keeps its certificate through the renewal.
        with socket.create_connection(("127.0.0.1", servers.port("imaps")), timeout=10) as raw, \
                trust.wrap_socket(raw, server_hostname=HOSTNAME) as still_open:
            assert still_open.recv(1024).startswith(b"* OK")

            # Not due yet; beat's task renews once fewer days remain than
            # configured, this time over dns-01 through the hook.
            assert tasks.renew() is False
            assert certificate("renew").startswith("not renewed: valid for")
            zone = tmp_path / "txt.json"
            hook = Path(__file__).parent / "dns_hook.py"
            settings.MAILHOST_ACME_DNS_HOOK = f"{sys.executable} {hook} {zone}"
            settings.MAILHOST_ACME_RENEW_DAYS = 100_000
            assert tasks.renew() is True
            assert json.loads(zone.read_text()) == {}  # the hook cleared what it set
            # Kept for the other nodes too: only the latest pair.
            (kept,) = IssuedCertificate.objects.all()
            assert kept.chain_pem.encode() == (tmp_path / "tls" / "cert.pem").read_bytes()

            renewed = served_over_imaps(servers.port("imaps"), trust)
            assert renewed.serial_number != first.serial_number
            renewed.verify_directly_issued_by(pebble.intermediate())
            assert served_over_starttls(servers.port("submission"), starttls_trust) == renewed
            assert x509.load_der_x509_certificate(
                still_open.getpeercert(binary_form=True)) == first
            still_open.sendall(b"a1 CAPABILITY\r\n")
            assert b"a1 OK" in still_open.recv(4096)

        # A new hosted domain's mta-sts name makes the certificate due again.
        settings.MAILHOST_ACME_RENEW_DAYS = 30
        make_domain("theirs.example")
        assert "due: not valid for mta-sts.theirs.example" in certificate("status")
    finally:
        servers.stop()
