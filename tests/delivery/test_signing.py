"""The DKIM signer (apps/delivery/signing.py) against dkimpy's verifier: both
key types, the canonicalisation corners of RFC 6376 §3.4, generated messages,
and tampering."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.delivery.signing import (
    SigningKey,
    dkim_sign,
    dkim_sign_all,
    relaxed_body,
    relaxed_header,
)
from tests import fakedns


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@pytest.fixture(scope="module")
def ed_seed() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    return base64.b64encode(seed).decode(), record


def _txt(value: str) -> str:
    return " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))


@pytest.fixture
def signer(rsa_pem, ed_seed):
    fakedns.publish([f"rsa._domainkey.example.org 300 IN TXT {_txt(rsa_pem[1])}",
                     f"ed._domainkey.example.org 300 IN TXT {_txt(ed_seed[1])}"])

    def sign_both(message: bytes) -> bytes:
        signed = dkim_sign(message, domain="example.org", selector="rsa",
                           private_key=rsa_pem[0])
        return dkim_sign(signed, domain="example.org", selector="ed",
                         private_key=ed_seed[0], algorithm="ed25519-sha256")

    return sign_both


MESSAGES = {
    "plain": b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
             b"Subject: hello\r\n\r\nHello Bob.\r\n",
    "folded and spaced": b"From: Alice <alice@example.org>\r\nTo:  bob@example.net,\r\n"
                         b"\tcarol@example.net  \r\nSubject:   two  \t spaces\r\n"
                         b"Subject: again\r\nX-Unsigned: yes\r\n\r\n"
                         b"a  \t line with tabs \t \r\n\r\nlast\r\n\r\n\r\n",
    "empty body": b"From: alice@example.org\r\nSubject: nothing\r\n\r\n",
    "no final CRLF": b"From: alice@example.org\r\n\r\nno line end",
    "bare LF": b"From: alice@example.org\nSubject: unix\n\nline one\nline two\n",
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_both_signatures_verify_with_dkimpy(signer, name):
    signed = signer(MESSAGES[name])
    assert signed.endswith(MESSAGES[name])
    assert fakedns.dkim_verifies(signed, 0), "Ed25519 (the outer signature)"
    assert fakedns.dkim_verifies(signed, 1), "RSA"


def test_whitespace_changes_in_transit_keep_the_relaxed_signature(signer):
    signed = signer(MESSAGES["plain"])
    rewrapped = signed.replace(b"Subject: hello", b"Subject:  hello ").replace(
        b"Hello Bob.\r\n", b"Hello   Bob.  \r\n\r\n")
    assert fakedns.dkim_verifies(rewrapped, 0) and fakedns.dkim_verifies(rewrapped, 1)


@pytest.mark.parametrize("change", [
    (b"Hello Bob.", b"Hello Eve."),  # the body (bh=)
    (b"Subject: hello", b"Subject: hullo"),  # a signed header field (b=)
])
def test_a_changed_message_no_longer_verifies(signer, change):
    signed = signer(MESSAGES["plain"]).replace(*change)
    assert not fakedns.dkim_verifies(signed, 0) and not fakedns.dkim_verifies(signed, 1)


def test_an_added_from_breaks_the_signature(signer):
    # RFC 6376 §8.15: From is signed once more than present.
    signed = signer(MESSAGES["plain"])
    head, _, body = signed.partition(b"\r\n\r\n")
    forged = head + b"\r\nFrom: mallory@example.com\r\n\r\n" + body
    assert not fakedns.dkim_verifies(forged, 0) and not fakedns.dkim_verifies(forged, 1)


def test_unsigned_fields_may_be_added(signer):
    signed = signer(MESSAGES["plain"])
    assert fakedns.dkim_verifies(b"X-Added: by a relay\r\n" + signed, 1)


def test_relaxed_canonicalisation_of_rfc_6376_section_3_4_5():
    # The example of RFC 6376 §3.4.5.
    assert relaxed_header(b"A", b" X") == b"a:X\r\n"
    assert relaxed_header(b"B ", b" Y\t\r\n\tZ  ") == b"b:Y Z\r\n"
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert relaxed_body(b"") == b"" and relaxed_body(b"\r\n\r\n") == b""


def test_signing_with_both_keys_at_once_is_signing_with_each_in_turn(rsa_pem, ed_seed):
    message = MESSAGES["folded and spaced"]
    in_turn = dkim_sign(
        dkim_sign(message, domain="example.org", selector="rsa", private_key=rsa_pem[0],
                  now=1_800_000_000),
        domain="example.org", selector="ed", private_key=ed_seed[0],
        algorithm="ed25519-sha256", now=1_800_000_000)
    at_once = dkim_sign_all(message, domain="example.org", now=1_800_000_000, keys=[
        SigningKey("rsa", rsa_pem[0]), SigningKey("ed", ed_seed[0], "ed25519-sha256")])
    assert at_once == in_turn


# Header values and body lines with the whitespace and folding that relaxed
# canonicalisation (RFC 6376 §3.4.2, §3.4.4) rewrites.
_TEXT = st.text(st.sampled_from("aZ09 \t.:;<>@-=\"()"), max_size=20)
_VALUE = st.lists(_TEXT, min_size=1, max_size=3).map(lambda parts: "\r\n\t".join(parts))
_FIELD = st.tuples(st.sampled_from(["To", "Subject", "Cc", "Date", "Message-ID", "X-Other",
                                    "from", "SUBJECT"]), _VALUE)
_BODY = st.lists(st.text(st.sampled_from("ab .\t"), max_size=12), max_size=8).map(
    "\r\n".join)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(_FIELD, max_size=6), body=_BODY, final_crlf=st.booleans())
def test_generated_messages_verify_with_dkimpy(signer, fields, body, final_crlf):
    head = "From: Alice <alice@example.org>\r\n" + "".join(
        f"{name}:{value}\r\n" for name, value in fields)
    message = (head + "\r\n" + body + ("\r\n" if final_crlf else "")).encode()
    signed = signer(message)
    assert signed.endswith(message)
    # As a verifier gets it: SMTP ends the data with CRLF (RFC 5321 §4.1.1.4),
    # so that whitespace on an unterminated last line is trailing whitespace.
    received = signed if signed.endswith(b"\r\n") else signed + b"\r\n"
    assert fakedns.dkim_verifies(received, 0), "Ed25519 (the outer signature)"
    assert fakedns.dkim_verifies(received, 1), "RSA"
