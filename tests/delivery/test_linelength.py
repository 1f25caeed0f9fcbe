"""limit_line_length: body lines over 998 octets re-encoded as quoted-printable
(RFC 5322 §2.1.1, RFC 2045 §6.7), pure over bytes."""

from __future__ import annotations

import base64
import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.delivery.linelength import MAX_LINE, has_long_line, limit_line_length
from apps.store import mime

LONG = b"a" * 3000


def leaf_bodies(message: bytes) -> list[bytes]:
    """Each leaf's decoded body, in order (inside encapsulated messages too),
    line breaks as LF."""
    bodies: list[bytes] = []
    for _, part in mime.leaf_parts(mime.analyze(message).bodystructure):
        body = message[part["body_start"]:part["body_end"]]
        if part["message"]:
            bodies += leaf_bodies(body)
        else:
            bodies.append(mime.decode_body(body, part["encoding"]).replace(b"\r\n", b"\n"))
    return bodies


def test_short_lines_keep_every_byte():
    message = b"From: a@example.org\r\n\r\n" + (b"x" * MAX_LINE + b"\r\n") * 3
    assert limit_line_length(message) is message


def test_only_the_part_with_the_long_line_changes():
    message = (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=b1\r\n\r\n"
        b"--b1\r\nContent-Type: text/plain\r\n\r\nshort  \r\n"
        b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n  (folded)\r\n\r\n<p>" + LONG + b"\xc3\xa9</p>\r\n"
        b"--b1--\r\n")
    out = limit_line_length(message)
    assert not has_long_line(out)
    assert b"--b1\r\nContent-Type: text/plain\r\n\r\nshort  \r\n--b1" in out
    assert out.count(b"Content-Transfer-Encoding") == 1
    assert b"(folded)" not in out
    html = email.message_from_bytes(out, policy=email.policy.default).get_payload()[1]
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content() == "<p>" + "a" * 3000 + "é</p>"
    assert leaf_bodies(out) == leaf_bodies(message)


def test_base64_in_one_line_is_wrapped_and_stays_base64():
    payload = bytes(range(256)) * 20
    message = (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.b64encode(payload) + b"\r\n")
    out = limit_line_length(message)
    assert not has_long_line(out)
    assert out.count(b"Content-Transfer-Encoding: base64\r\n") == 1
    assert email.message_from_bytes(out).get_payload(decode=True) == payload


def test_a_message_without_mime_fields_gets_them():
    message = b"From: a@example.org\r\nSubject: s\r\n\r\n" + LONG + b"\xe9\r\n"
    out = limit_line_length(message)
    header = out.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"MIME-Version: 1.0\r\n" in header
    # Not UTF-8: the charset says it is unknown rather than US-ASCII.
    assert b"Content-Type: text/plain; charset=unknown-8bit\r\n" in header
    assert leaf_bodies(out) == leaf_bodies(message)


def test_inside_an_encapsulated_message():
    inner = b"From: b@example.net\r\nSubject: inner\r\n\r\n" + LONG + b"\r\n"
    message = (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: message/rfc822\r\n\r\n" + inner)
    out = limit_line_length(message)
    assert not has_long_line(out)
    assert out.startswith(b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
                          b"Content-Type: message/rfc822\r\n\r\nFrom: b@example.net\r\n")
    assert leaf_bodies(out) == leaf_bodies(message)


LINE = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
                 st.integers(MAX_LINE - 2, 2500).map(lambda n: b"y" * n))


@settings(max_examples=60, deadline=None)
@given(st.lists(LINE, max_size=6), st.lists(LINE, max_size=6))
def test_every_line_fits_and_the_content_is_kept(first, second):
    message = (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\n"
               + b"\r\n".join(first) + b"\r\n--zz\r\nContent-Type: text/plain\r\n\r\n"
               + b"\r\n".join(second) + b"\r\n--zz--\r\n")
    out = limit_line_length(message)
    assert not has_long_line(out)
    assert leaf_bodies(out) == leaf_bodies(message)
