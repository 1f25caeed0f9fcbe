"""Where the listeners' certificate and key live, and how they are written:
the configured pair (MAILHOST_TLS_CERT/KEY), or a pair in the data directory
that starts as a self-signed certificate and that ACME replaces in place.

A pair issued over ACME is kept in the database too (IssuedCertificate), so
that a renewal on one node reaches every node: ``install_newer`` writes a
newer row's pair over the local files, which are then a cache of it."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from apps.certificates.models import IssuedCertificate

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography (several MiB, with its own OpenSSL) and mailhost/sealing.py, which
# needs it, are imported by the functions that make, read or unseal a pair: the
# listeners import this module for the paths alone.

log = logging.getLogger(__name__)
# The sealing purpose of an issued certificate's private key (mailhost/sealing.py).
_SEALED_KEY = b"mailhost issued certificate key"


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only from the first byte, and
    rename it into place, so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A name of its own: several listener processes of a node may install
    # the same pair at once.
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_pair(cert_path: Path, key_path: Path, *, chain_pem: bytes, key_pem: bytes) -> None:
    """Replace the pair: the key first, then the certificate chain. A listener
    that reads them between the two renames finds them mismatched and keeps
    its previous pair until the next handshake (apps/mailservers/tls.py)."""
    write_private(key_path, key_pem)
    write_private(cert_path, chain_pem)


def _installed_version_path() -> Path:
    """Which IssuedCertificate this node's files hold (its own, not shared)."""
    return settings.DATA_DIR / "acme" / "installed-version"


def _installed_version() -> int:
    try:
        return int(_installed_version_path().read_text())
    except (OSError, ValueError):
        return 0


def _install(issued: IssuedCertificate, key_pem: bytes) -> None:
    cert_path, key_path = configured_paths()
    write_pair(cert_path, key_path, chain_pem=issued.chain_pem.encode(), key_pem=key_pem)
    write_private(_installed_version_path(), str(issued.pk).encode())


def keep_issued(*, chain_pem: bytes, key_pem: bytes) -> IssuedCertificate:
    """Keep a newly issued pair for every node and install it on this one."""
    from mailhost.sealing import seal

    with transaction.atomic():
        issued = IssuedCertificate.objects.create(
            chain_pem=chain_pem.decode(), sealed_key=seal(_SEALED_KEY, key_pem.decode()))
        IssuedCertificate.objects.filter(pk__lt=issued.pk).delete()  # only the latest counts
    _install(issued, key_pem)
    return issued


def install_newer() -> bool:
    """Write the database's pair over this node's files when it is newer than
    theirs (another node renewed it); True when it did. Only with ACME on: an
    administrator's own files are not replaced by what ACME issued before."""
    if not settings.MAILHOST_ACME_DIRECTORY:
        return False
    latest = IssuedCertificate.objects.order_by("-pk").first()
    if latest is None or latest.pk <= _installed_version():
        return False
    from mailhost.sealing import InvalidToken, unseal

    try:
        key_pem = unseal(_SEALED_KEY, latest.sealed_key)
    except InvalidToken:
        log.error("the stored certificate's key cannot be read: "
                  "is SECRET_KEY the same on every node?")
        return False
    _install(latest, key_pem.encode())
    log.info("installed certificate %s from the database in %s", latest.pk,
             configured_paths()[0])
    return True


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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
    write_pair(cert_path, key_path, chain_pem=cert.public_bytes(serialization.Encoding.PEM),
               key_pem=private_key_pem(key))
    log.info("generated a self-signed certificate for %s in %s", hostname, cert_path)


def configured_paths() -> tuple[Path, Path]:
    """The pair the listeners serve (and ACME writes), whether it exists yet or not."""
    if settings.MAILHOST_TLS_CERT and settings.MAILHOST_TLS_KEY:
        return Path(settings.MAILHOST_TLS_CERT), Path(settings.MAILHOST_TLS_KEY)
    tls_dir = settings.DATA_DIR / "tls"
    return tls_dir / "cert.pem", tls_dir / "key.pem"


def certificate_paths() -> tuple[Path, Path]:
    """The pair the listeners serve; a self-signed one is made in the data
    directory on first start."""
    cert_path, key_path = configured_paths()
    if self_signed_missing():
        generate_self_signed(cert_path, key_path, settings.MAILHOST_HOSTNAME)
    return cert_path, key_path


def self_signed_missing() -> bool:
    """No pair is configured and the data directory's is not made yet."""
    cert_path, key_path = configured_paths()
    configured = bool(settings.MAILHOST_TLS_CERT and settings.MAILHOST_TLS_KEY)
    return not configured and not (cert_path.exists() and key_path.exists())


@dataclass(frozen=True)
class Installed:
    """What the certificate being served says about itself."""

    names: frozenset[str]
    issuer: str
    not_after: datetime.datetime
    self_signed: bool

    def days_left(self, now: datetime.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def installed() -> Installed | None:
    """The leaf certificate of the served pair, or None when there is none."""
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    cert_path, _ = configured_paths()
    try:
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except (OSError, ValueError):
        return None
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names = frozenset(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return Installed(names=names, issuer=leaf.issuer.rfc4514_string(),
                     not_after=leaf.not_valid_after_utc,
                     self_signed=leaf.issuer == leaf.subject)
