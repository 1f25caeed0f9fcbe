"""New DKIM key pairs: RSA-2048 (RFC 8301 §3.2) or Ed25519 (RFC 8463).

A module of its own so that only the processes that make keys (provisioning,
rotation) load ``cryptography``: apps/directory/services.py imports it when a
key is made, and every listener imports the services."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def rsa_pair() -> tuple[str, bytes]:
    """The private key as PKCS#8 PEM, the public key as DER SubjectPublicKeyInfo."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return secret, public


def ed25519_pair() -> tuple[str, bytes]:
    """RFC 8463 §4: the raw 32-octet public key in p=; dkimpy takes the seed in base64."""
    private = ed25519.Ed25519PrivateKey.generate()
    secret = base64.b64encode(private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())).decode("ascii")
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return secret, public
