"""CHUNKING/BDAT and BINARYMIME (RFC 3030) on the MX and on submission, over
real sockets: smtplib has no BDAT and swaks (20201014) neither, so the BDAT
exchanges are written byte for byte; what lands is read back over IMAP."""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.smtp.server import parse_bdat_argument
from mailhost.errors import Invalid
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import RawSMTP, make_message, send_chunked, stored

# Lines a DATA transfer could not carry as they are: a leading dot (no
# dot-stuffing in BDAT), a lone dot, a line longer than any line limit.
AWKWARD_BODY = (b".starts with a dot\r\n.\r\n" + b"x" * 5000 + b"\r\n"
                + b"last line without an end")
# RFC 3030 §3: a binary part, every octet value, bare CR and LF among them.
BINARY_MESSAGE = (
    b"From: sender@remote.example\r\nTo: alice@example.org\r\nSubject: binary\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n" + bytes(range(256)) * 4 + b"\n\r.\r\n")


@pytest.fixture
def alice(transactional_db):
    return make_mailbox("alice@example.org")


def _session(port: int) -> RawSMTP:
    client = RawSMTP(port)
    client.command(b"EHLO client.test")
    return client


def _imap_bodies(port: int, address: str) -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login(address, PASSWORD)
        client.select("INBOX", readonly=True)
        _, found = client.uid("SEARCH", "ALL")
        bodies = []
        for uid in found[0].split():
            _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
            bodies.append(parts[0][1])
        return bodies
    finally:
        client.logout()


def test_ehlo_offers_chunking_and_binarymime(smtp_port, alice):
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        assert client.has_extn("chunking") and client.has_extn("binarymime")


def test_pipelined_chunks_land_byte_for_byte(mail_servers, smtp_port, alice):
    message = make_message("alice@example.org").rstrip(b"\r\n") + b"\r\n" + AWKWARD_BODY
    first, second = message[:100], message[100:]
    client = _session(smtp_port)
    # RFC 3030 §4.2: MAIL, RCPT and the chunks in one write.
    client.send(b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                + f"BDAT {len(first)}\r\n".encode() + first
                + f"BDAT {len(second)} LAST\r\n".encode() + second)
    replies = [client.reply() for _ in range(4)]
    assert [r[-1][:3] for r in replies] == [b"250"] * 4
    assert replies[2][-1].startswith(b"250 2.0.0 100 octets")
    assert replies[3][-1].startswith(b"250 2.0.0 OK id=")
    # The session goes on: a second message in one chunk, then an empty LAST.
    client.send(b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                + f"BDAT {len(message)}\r\n".encode() + message + b"BDAT 0 LAST\r\n")
    assert [client.reply()[-1][:3] for _ in range(4)] == [b"250"] * 4
    client.command(b"QUIT")
    bodies = _imap_bodies(mail_servers.port("imap"), "alice@example.org")
    assert len(bodies) == 2
    for body in bodies:
        assert body.endswith(message)  # below our trace and verdict fields


def test_binarymime_keeps_every_octet(mail_servers, smtp_port, alice):
    client = _session(smtp_port)
    assert client.command(b"MAIL FROM:<sender@remote.example> BODY=BINARYMIME")[-1][:3] \
        == b"250"
    assert client.command(b"RCPT TO:<alice@example.org>")[-1][:3] == b"250"
    # RFC 3030 §3: no DATA for a binary body.
    assert client.command(b"DATA")[-1].startswith(b"503 5.5.1")
    client.send(f"BDAT {len(BINARY_MESSAGE)} LAST\r\n".encode() + BINARY_MESSAGE)
    assert client.reply()[-1].startswith(b"250 2.0.0 OK")
    client.close()
    (body,) = _imap_bodies(mail_servers.port("imap"), "alice@example.org")
    assert body.endswith(BINARY_MESSAGE)


def test_body_binarymime_with_data_is_refused_and_rset_recovers(smtp_port, alice):
    client = _session(smtp_port)
    client.command(b"MAIL FROM:<sender@remote.example> BODY=BINARYMIME")
    client.command(b"RCPT TO:<alice@example.org>")
    assert client.command(b"DATA")[-1].startswith(b"503 5.5.1")
    assert client.command(b"RSET")[-1][:3] == b"250"
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    assert client.command(b"DATA")[-1][:3] == b"354"
    client.send(make_message("alice@example.org") + b".\r\n")
    assert client.reply()[-1][:3] == b"250"
    client.close()
    assert len(stored("alice@example.org")) == 1


def test_data_after_bdat_is_refused_and_rset_clears_the_chunks(smtp_port, alice):
    client = _session(smtp_port)
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    client.send(b"BDAT 9\r\nSubject: ")
    assert client.reply()[-1][:3] == b"250"
    assert client.command(b"DATA")[-1].startswith(b"503 5.5.1")  # RFC 3030 §2
    assert client.command(b"RSET")[-1][:3] == b"250"
    # The first chunk is gone: the message is the second transaction's alone.
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    message = make_message("alice@example.org")
    client.send(f"BDAT {len(message)} LAST\r\n".encode() + message)
    assert client.reply()[-1][:3] == b"250"
    client.close()
    (got,) = stored("alice@example.org")
    assert got.endswith(message) and b"Subject: Subject: " not in got


def test_bdat_out_of_sequence_is_refused_and_its_data_skipped(smtp_port, alice):
    client = _session(smtp_port)
    # The chunk's octets look like commands: they must be read as data all the same.
    junk = b"RSET\r\nQUIT\r\n"
    client.send(f"BDAT {len(junk)}\r\n".encode() + junk)
    assert client.reply()[-1].startswith(b"503 5.5.1 Need MAIL")
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.send(f"BDAT {len(junk)} LAST\r\n".encode() + junk)
    assert client.reply()[-1].startswith(b"503 5.5.1 Need RCPT")
    assert client.command(b"NOOP")[-1][:3] == b"250"  # still in step
    client.close()


@pytest.mark.parametrize("greeting", [None, b"HELO client.test"])
def test_bdat_without_ehlo_is_refused(smtp_port, alice, greeting):
    client = RawSMTP(smtp_port)
    if greeting:  # CHUNKING is an extension: not after HELO
        client.command(greeting)
        client.command(b"MAIL FROM:<sender@remote.example>")
        client.command(b"RCPT TO:<alice@example.org>")
    client.send(b"BDAT 4 LAST\r\nabcd")
    assert client.reply()[-1].startswith(b"503 5.5.1 Say EHLO")
    assert client.command(b"NOOP")[-1][:3] == b"250"
    client.close()
    assert stored("alice@example.org") == []


@pytest.mark.parametrize("argument", [b"", b" x", b" 10 LASTX", b" -1", b" 10  LAST",
                                      b" 1e3", b" 10 LAST more", b" 1234567890123456789"])
def test_malformed_bdat_arguments(smtp_port, alice, argument):
    client = _session(smtp_port)
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    reply = client.command(b"BDAT" + argument)
    assert reply[-1].startswith(b"501 5.5.4"), reply
    assert client.command(b"NOOP")[-1][:3] == b"250"
    client.close()


def test_chunks_beyond_the_size_limit_are_discarded(settings, smtp_port, alice):
    settings.MAILHOST_MAX_MESSAGE_SIZE = 1000
    client = _session(smtp_port)
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    chunk = b"x" * 600
    # Pipelined: the second chunk goes past the limit, the third is behind it.
    client.send(b"BDAT 600\r\n" + chunk + b"BDAT 600\r\n" + chunk + b"BDAT 600 LAST\r\n"
                + chunk)
    replies = [client.reply()[-1] for _ in range(3)]
    assert replies[0][:3] == b"250"
    assert replies[1].startswith(b"552 5.3.4") and replies[2].startswith(b"552 5.3.4")
    assert client.command(b"RSET")[-1][:3] == b"250"
    # A message within the limit goes through on the same connection.
    message = make_message("alice@example.org")
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    client.send(f"BDAT {len(message)} LAST\r\n".encode() + message)
    assert client.reply()[-1][:3] == b"250"
    client.close()
    (got,) = stored("alice@example.org")
    assert b"x" * 600 not in got


def test_submission_takes_bdat_after_auth(mail_servers, alice):
    port = mail_servers.port("submission")
    message = make_message("bob@example.org").replace(b"sender@remote.example",
                                                       b"alice@example.org")
    make_mailbox("bob@example.org")
    client = _session(port)
    client.send(b"BDAT 4 LAST\r\nabcd")
    assert client.reply()[-1].startswith(b"530 5.7.0")  # data skipped, AUTH first
    auth = smtplib.SMTP("127.0.0.1", port)
    auth.ehlo("client.test")
    auth.login("alice@example.org", PASSWORD)
    code, text = send_chunked(auth, "alice@example.org", "bob@example.org", message,
                              binary=True)
    assert code == 250, text
    auth.quit()
    client.close()
    (got,) = stored("bob@example.org")
    assert got.endswith(message.split(b"\r\n\r\n", 1)[1])


def test_smtps_takes_bdat(mail_servers, alice):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", mail_servers.port("smtps"), context=context) as client:
        client.ehlo("client.test")
        assert client.has_extn("chunking")
        client.login("alice@example.org", PASSWORD)
        message = make_message("alice@example.org").replace(b"sender@remote.example",
                                                            b"alice@example.org")
        assert send_chunked(client, "alice@example.org", "alice@example.org",
                            message)[0] == 250
    assert len(stored("alice@example.org")) == 1


@given(st.integers(min_value=0, max_value=10**18 - 1), st.booleans(),
       st.sampled_from(["LAST", "last", "Last"]))
def test_bdat_argument_parser_reads_what_the_grammar_allows(size, last, marker):
    argument = f"{size} {marker}" if last else str(size)
    assert parse_bdat_argument(argument) == (size, last)


@given(st.text(max_size=40))
def test_bdat_argument_parser_refuses_the_rest(text):
    valid = re.fullmatch(r"[0-9]{1,18}( [Ll][Aa][Ss][Tt])?", text) is not None
    try:
        size, last = parse_bdat_argument(text)
    except Invalid:
        assert not valid
    else:
        assert valid and str(size) == text.split(" ")[0].lstrip("0").rjust(1, "0") \
            and last == (" " in text)
