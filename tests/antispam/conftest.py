from __future__ import annotations

import base64
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import fakedns


class Zone:
    """The fake resolver's records, for one test."""

    def add(self, name: str, rdtype: str, *answers: str) -> None:
        fakedns.ZONE.setdefault(fakedns.key(name, rdtype), []).extend(answers)  # type: ignore[union-attr]

    def replace(self, name: str, rdtype: str, *answers: str) -> None:
        fakedns.ZONE[fakedns.key(name, rdtype)] = list(answers)

    def get(self, name: str, rdtype: str) -> list[str]:
        return list(fakedns.ZONE.get(fakedns.key(name, rdtype), []))  # type: ignore[call-overload]

    def fail(self, name: str, rdtype: str) -> None:
        fakedns.ZONE[fakedns.key(name, rdtype)] = "TEMPFAIL"


@pytest.fixture
def zone() -> Iterator[Zone]:
    fakedns.ZONE.clear()
    yield Zone()
    fakedns.ZONE.clear()


class DkimSigner:
    """A test key pair, its DNS record published in the fake zone."""

    def __init__(self, zone: Zone, domain: str, selector: str = "test") -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.domain, self.selector = domain, selector
        zone.add(f"{selector}._domainkey.{domain}", "TXT",
                 f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")

    def sign(self, message: bytes) -> bytes:
        signature = dkim.sign(message, self.selector.encode(), self.domain.encode(),
                              self.private_pem,
                              include_headers=[b"from", b"to", b"subject", b"date"])
        return signature + message


@pytest.fixture
def dkim_signer(zone: Zone):
    keys: dict[tuple[str, str], DkimSigner] = {}

    def make(domain: str, selector: str = "test") -> DkimSigner:
        if (domain, selector) not in keys:
            keys[domain, selector] = DkimSigner(zone, domain, selector)
        return keys[domain, selector]

    return make


def message(from_address: str = "alice@sender.example", *, subject: str = "Lunch",
            body: str = "See you at noon.", extra: str = "") -> bytes:
    return (
        f"From: Alice <{from_address}>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.example>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()
