"""TLS for the listeners: the configured certificate, or a self-signed pair
generated into the data directory on first start."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

log = logging.getLogger(__name__)


def _generate_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    # Key first, private from the start; then the certificate; rename last so
    # that a concurrent starter never reads half a file.
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    log.info("generated a self-signed certificate for %s in %s", hostname, cert_path)


def certificate_paths() -> tuple[Path, Path]:
    if settings.MAILHOST_TLS_CERT and settings.MAILHOST_TLS_KEY:
        return Path(settings.MAILHOST_TLS_CERT), Path(settings.MAILHOST_TLS_KEY)
    tls_dir = settings.DATA_DIR / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        _generate_self_signed(cert_path, key_path, settings.MAILHOST_HOSTNAME)
    return cert_path, key_path


def server_context() -> ssl.SSLContext:
    cert_path, key_path = certificate_paths()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
