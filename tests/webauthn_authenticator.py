"""A software WebAuthn authenticator and the browser's part around it, for
service tests without Chromium: it answers registration and sign-in options
as navigator.credentials.create()/get() would (WebAuthn Level 3 §6.1 for the
authenticator data, §6.5 for the attestation object with format "none",
§5.8.1 for the client data), with a P-256 key (COSE ES256, RFC 9053 §2.1)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import bytes_to_base64url

# §6.1 authenticator data flags
USER_PRESENT = 0x01
ATTESTED_CREDENTIAL_DATA = 0x40


class SoftwareAuthenticator:
    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.sign_count = 0

    def _cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        # kty EC2, alg ES256, crv P-256, x, y
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _authenticator_data(self, rp_id: str, flags: int, extra: bytes = b"") -> bytes:
        return (hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
                + self.sign_count.to_bytes(4, "big") + extra)

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin,
                           "crossOrigin": False}).encode()

    def create(self, options: dict[str, Any], *, origin: str) -> str:
        """The JSON answer to registration ``options`` as a page at ``origin``
        would send it."""
        attested = (bytes(16) + len(self.credential_id).to_bytes(2, "big")
                    + self.credential_id + self._cose_public_key())
        auth_data = self._authenticator_data(
            options["rp"]["id"], USER_PRESENT | ATTESTED_CREDENTIAL_DATA, attested)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "attestationObject": bytes_to_base64url(attestation),
                         "transports": ["usb"]},
            "clientExtensionResults": {},
        })

    def get(self, options: dict[str, Any], *, origin: str, count: bool = True) -> str:
        """The JSON answer to sign-in ``options``; ``count=False`` leaves the
        signature counter where it was (as a cloned key would)."""
        if count:
            self.sign_count += 1
        auth_data = self._authenticator_data(options["rpId"], USER_PRESENT)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "authenticatorData": bytes_to_base64url(auth_data),
                         "signature": bytes_to_base64url(signature)},
            "clientExtensionResults": {},
        })
