"""The MX listener over a real socket, driven by smtplib and raw bytes."""

import asyncio
import re
import smtplib
from email._header_value_parser import get_angle_addr

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.smtp.server import has_bare_lf, plain_path, read_data
from apps.store.models import Message
from tests.factories import make_mailbox
from tests.smtp.helpers import RawSMTP, make_message, stored

ENHANCED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


@pytest.fixture
def alice(transactional_db):
    return make_mailbox("alice@example.org")


def test_ehlo_advertises_the_extensions(smtp_port, alice):
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
        for extension in ("size", "starttls", "8bitmime", "smtputf8", "pipelining",
                          "enhancedstatuscodes"):
            assert client.has_extn(extension), extension
        assert int(client.esmtp_features["size"]) > 0


def test_plain_delivery_lands_in_inbox_with_received_header(smtp_port, alice):
    message = make_message("alice@example.org")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        refused = client.sendmail("sender@remote.example", ["alice@example.org"], message)
    assert refused == {}
    (got,) = stored("alice@example.org")
    assert got.endswith(message)
    header = got[: len(got) - len(message)]
    assert header.startswith(b"Received: from client.test ([127.0.0.1])")
    assert b"with ESMTP id" in header and b"for <alice@example.org>" in header


def test_starttls_delivery_with_verified_certificate(smtp_port, alice, client_tls_context):
    with smtplib.SMTP("localhost", smtp_port) as client:
        client.ehlo("client.test")
        code, _ = client.starttls(context=client_tls_context)
        assert code == 220
        client.ehlo("client.test")
        assert not client.has_extn("starttls")  # RFC 3207 §4.2: not offered again
        client.sendmail("sender@remote.example", ["alice@example.org"],
                        make_message("alice@example.org"))
    (got,) = stored("alice@example.org")
    assert b"with ESMTPS id" in got


def test_one_unknown_recipient_among_good_ones(smtp_port, alice):
    make_mailbox("bob@example.org")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        refused = client.sendmail(
            "sender@remote.example",
            ["alice@example.org", "nobody@example.org", "bob@example.org"],
            make_message("team"))
    assert set(refused) == {"nobody@example.org"}
    code, text = refused["nobody@example.org"]
    assert code == 550 and text.startswith(b"5.1.1")
    assert len(stored("alice@example.org")) == len(stored("bob@example.org")) == 1
    # Stored once for both recipients, and the Received header names nobody.
    assert Message.objects.values("blob_id").distinct().count() == 1
    assert b"for <" not in stored("bob@example.org")[0].split(b"\r\n\r\n")[0]


def test_relaying_is_denied(smtp_port, alice):
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        client.mail("sender@remote.example")
        code, text = client.rcpt("victim@elsewhere.test")
    assert code == 550 and text.startswith(b"5.7.1")


def test_declared_size_over_the_limit_is_refused_at_mail_from(smtp_port, alice, settings):
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        limit = int(client.esmtp_features["size"])
        code, text = client.mail("sender@remote.example", [f"SIZE={limit + 1}"])
    assert code == 552 and text.startswith(b"5.3.4")


def test_undeclared_oversized_message_is_refused_after_data(transactional_db, settings):
    settings.MAILHOST_MAX_MESSAGE_SIZE = 20_000
    make_mailbox("alice@example.org")
    from tests.conftest import ServerThread

    server = ServerThread(["smtp"]).start()
    try:
        client = RawSMTP(server.port("smtp"))
        client.command(b"EHLO client.test")
        client.command(b"MAIL FROM:<sender@remote.example>")
        client.command(b"RCPT TO:<alice@example.org>")
        assert client.command(b"DATA")[0].startswith(b"354")
        client.send(make_message("alice@example.org", size=40_000) + b".\r\n")
        (reply,) = client.reply()
        assert reply.startswith(b"552 5.3.4")
        # The session goes on after the refusal.
        assert client.command(b"NOOP")[0].startswith(b"250 2.0.0")
        client.close()
    finally:
        server.stop()
    assert stored("alice@example.org") == []


def test_eight_bit_body_and_utf8_addresses(smtp_port, transactional_db):
    make_mailbox("jöran@bücher.example")
    body = "Grüße aus Köln — 東京".encode()
    message = (b"From: =?utf-8?q?J=C3=B6ran?= <x@y.example>\r\nSubject: 8bit\r\n\r\n"
               + body + b"\r\n")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        refused = client.sendmail("sénder@remote.example", ["Jöran@Bücher.example"], message,
                                  mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    (got,) = stored("jöran@xn--bcher-kva.example")
    assert got.endswith(message)


def test_pipelined_commands_get_replies_in_order(smtp_port, alice):
    client = RawSMTP(smtp_port)
    client.command(b"EHLO client.test")
    client.send(b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                b"RCPT TO:<nobody@example.org>\r\nDATA\r\n")
    replies = [client.reply()[0] for _ in range(4)]
    assert [r[:3] for r in replies] == [b"250", b"250", b"550", b"354"]
    client.send(make_message("alice@example.org") + b".\r\nQUIT\r\n")
    assert client.reply()[0].startswith(b"250 2.0.0")
    assert client.reply()[0].startswith(b"221 2.0.0")
    assert len(stored("alice@example.org")) == 1


@pytest.mark.parametrize("smuggle", [
    b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r",
])
def test_bare_lf_smuggling_is_refused(smtp_port, alice, smuggle):
    """SMTP smuggling: a second message hidden behind a non-standard end of data."""
    client = RawSMTP(smtp_port)
    client.command(b"EHLO client.test")
    client.command(b"MAIL FROM:<sender@remote.example>")
    client.command(b"RCPT TO:<alice@example.org>")
    client.command(b"DATA")
    client.send(b"Subject: first\r\n\r\nhello" + smuggle +
                b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
    reply = client.reply()[0]
    client.close()
    if smuggle == b"\r\n.\r":
        # A bare CR is not an end of line for us either: one message, all of it.
        assert reply.startswith(b"250")
        (got,) = stored("alice@example.org")
        assert b"smuggled" in got
    else:
        assert reply.startswith(b"550 5.5.2")
        assert stored("alice@example.org") == []


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r", b".", b"a"])).map(b"".join))
def test_a_bare_lf_is_an_lf_without_a_cr_before_it(data):
    """RFC 5321 §2.3.8, as the look-behind pattern defines it."""
    assert has_bare_lf(data) == bool(re.search(rb"(?<!\r)\n", data))


def test_quota_exceeded_is_a_temporary_failure(smtp_port, transactional_db):
    make_mailbox("full@example.org", quota=3000)
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("client.test")
        client.mail("sender@remote.example", ["SIZE=5000"])
        code, text = client.rcpt("full@example.org")
        assert code == 452 and text.startswith(b"4.2.2")
        client.rset()
        client.mail("sender@remote.example")  # no SIZE: found out after DATA
        assert client.rcpt("full@example.org")[0] == 250
        code, text = client.data(make_message("full@example.org", size=5000))
        assert code == 452 and text.startswith(b"4.2.2")
    assert stored("full@example.org") == []


def test_every_reply_carries_an_enhanced_status_code(smtp_port, alice):
    client = RawSMTP(smtp_port)
    assert client.greeting[0].startswith(b"220 ")
    client.command(b"EHLO client.test")
    for line in [b"NOOP", b"RCPT TO:<alice@example.org>", b"MAIL FROM:<a@b.example>",
                 b"MAIL FROM:<a@b.example>", b"RCPT TO:<bad address>", b"VRFY alice",
                 b"BOGUS", b"RSET", b"DATA", b"QUIT"]:
        for reply in client.command(line):
            if not reply.startswith((b"3", b"220")):
                assert ENHANCED.match(reply), (line, reply)


# Found by bench/fuzz.py: each once answered "500 Error: (IndexError) ...",
# "(AttributeError)" or "(UnicodeEncodeError)", or took a sender that could not
# be stored (451 after DATA).
MALFORMED_ARGUMENTS = [
    (b"MAIL FROM:<", b"553 5.1.3"),
    (b"MAIL FROM: <@", b"553 5.1.3"),
    (b"MAIL FROM:<sender@[remote.example>", b"553 5.1.3"),
    (b"MAIL FROM:<s\xe9nder@remote.example>", b"553 5.1.3"),  # Latin-1, not UTF-8
    (b"MAIL FROM:<sender@remote.example> SIZE=\xff", b"553 5.1.3"),
    (b"VRFY <", b"502 5.5.1"),
    (b"VRFY \xff", b"502 5.5.1"),
    (b"EHLO cl\xe9ent.test", b"501 5.5.4"),
    (b"HELO \x80", b"501 5.5.4"),
]


def test_malformed_arguments_get_a_syntax_error_and_the_session_goes_on(smtp_port, alice):
    client = RawSMTP(smtp_port)
    for line, reply in MALFORMED_ARGUMENTS:
        client.command(b"EHLO client.test")
        assert client.command(line)[-1].startswith(reply), line
    client.command(b"EHLO client.test")
    assert client.command(b"MAIL FROM:<sender@remote.example>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<alice@example.org>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<\xe9@example.org>")[0].startswith(b"553 5.1.3")
    assert client.command(b"RCPT TO:<")[0].startswith(b"553 5.1.3")
    client.command(b"DATA")
    assert client.command(make_message("alice@example.org") + b".")[0].startswith(b"250")
    client.close()
    assert len(stored("alice@example.org")) == 1


def test_real_mail_with_lines_over_1000_octets_is_accepted(smtp_port, alice):
    """15 messages of the SpamAssassin ham/spam corpus have such lines; peers accept them."""
    from tests.conftest import CORPORA

    for path in sorted((CORPORA / "ham").iterdir()):
        raw = path.read_bytes()
        if any(len(line) > 1000 for line in raw.split(b"\n")):
            break
    lines = raw.split(b"\n")
    if lines[0].startswith(b"From "):
        lines = lines[1:]
    message = b"\r\n".join(line.rstrip(b"\r") for line in lines)
    assert message.endswith(b"\r\n")
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        assert client.sendmail("sender@remote.example", ["alice@example.org"], message) == {}
    (got,) = stored("alice@example.org")
    assert got.endswith(message)


def test_line_over_the_limit_is_refused_and_nothing_stored(transactional_db, settings):
    settings.MAILHOST_SMTP_MAX_LINE_LENGTH = 2000
    make_mailbox("alice@example.org")
    from tests.conftest import ServerThread

    server = ServerThread(["smtp"]).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port("smtp")) as client:
            client.ehlo("client.test")
            client.mail("sender@remote.example")
            client.rcpt("alice@example.org")
            code, text = client.data(b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n")
        assert code == 500 and text.startswith(b"5.5.2")
    finally:
        server.stop()
    assert stored("alice@example.org") == []


def test_dot_transparency_and_the_next_command_in_the_same_packet(smtp_port, alice):
    """RFC 5321 §4.5.2: a leading dot is removed from each line; lines ending
    in a dot, or holding two, do not end the data; the command pipelined
    behind the end (RFC 2920) is answered as the next one."""
    body = b"..leading\r\nends with a dot.\r\n..\r\n...\r\nlast line\r\n"
    client = RawSMTP(smtp_port)
    try:
        client.command(b"EHLO client.test")
        client.command(b"MAIL FROM:<sender@remote.example>")
        client.command(b"RCPT TO:<alice@example.org>")
        assert client.command(b"DATA")[0].startswith(b"354")
        client.send(b"Subject: dots\r\n\r\n" + body + b".\r\nNOOP\r\n")
        assert client.reply()[0].startswith(b"250 2.0.0 OK")
        assert client.reply()[0].startswith(b"250")  # the NOOP's
    finally:
        client.close()
    (got,) = stored("alice@example.org")
    assert got.endswith(b"Subject: dots\r\n\r\n.leading\r\nends with a dot.\r\n.\r\n..\r\n"
                        b"last line\r\n")


def _read(raw: bytes, *, size_limit: int | None = None, line_limit: int = 1000,
          reader_limit: int = 1000) -> tuple[bytes, str | None, bytes]:
    """``read_data`` on ``raw``: (content, refusal, what is left to read)."""
    async def run() -> tuple[bytes, str | None, bytes]:
        reader = asyncio.StreamReader(limit=reader_limit)
        reader.feed_data(raw)
        reader.feed_eof()
        content, refusal = await read_data(reader, size_limit=size_limit,
                                           line_limit=line_limit)
        return content, refusal, await reader.read()

    return asyncio.run(run())


@pytest.mark.parametrize(("raw", "content"), [
    (b".\r\n", b""),  # a lone dot first: an empty message
    (b"a\r\n.\r\n", b"a\r\n"),
    (b"a.\r\n..\r\n.b.\r\n.\r\n", b"a.\r\n.\r\nb.\r\n"),
    # Only CRLF ends a line (RFC 5321 §2.3.8): no end of data before the last.
    (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),
    (b"a\r\n.\nb\n.\r\nc\r\n.\r\n", b"a\r\n\nb\n.\r\nc\r\n"),
    # Longer than the reader's buffer limit without a ".CRLF" in it.
    (b"x\r\n" * 2000 + b".\r\n", b"x\r\n" * 2000),
    ((b"y" * 900 + b".\r\n") * 3 + b".\r\n", (b"y" * 900 + b".\r\n") * 3),
])
def test_read_data_ends_at_the_lone_dot_only(raw, content):
    assert _read(raw + b"QUIT\r\n") == (content, None, b"QUIT\r\n")


def test_read_data_refuses_too_much_or_a_long_line_after_reading_to_the_end():
    too_much = _read(b"z" * 100 + b"\r\n" + b"z\r\n" * 3000 + b".\r\nQUIT\r\n",
                     size_limit=5000)
    assert too_much == (b"", "552 Error: Too much mail data", b"QUIT\r\n")
    long_line = _read(b"short\r\n" + b"w" * 1000 + b"\r\n.\r\nQUIT\r\n")
    assert long_line == (b"", "500 Line too long (see RFC5321 4.5.3.1.6)", b"QUIT\r\n")
    # The limit counts the CRLF, as aiosmtpd's does.
    assert _read(b"w" * 998 + b"\r\n.\r\n")[1] is None


def _dotted(valid: str, odd: str) -> st.SearchStrategy[str]:
    """Atoms joined by dots, mostly of ``valid`` characters, now and then with
    something the fast path must leave to the parser."""
    atom = st.text(valid, min_size=1, max_size=4) | st.text(valid + odd, max_size=4)
    return st.lists(atom, min_size=1, max_size=3).map(".".join)


_LOCAL = _dotted("aB0-+'`~=", "é\" \\(")
_DOMAIN = _dotted("aZ9-", "_é[] ")
_AFTER = st.tuples(st.sampled_from(["", " ", "\t", "  ", " (c) ", "(", "\r\n", " \x1c"]),
                   st.text("SIZE=10 ()é\t", max_size=8)).map("".join)


@given(local=_LOCAL, domain=_DOMAIN, after=_AFTER)
def test_the_plain_path_fast_path_agrees_with_aiosmtpds_parser(local, domain, after):
    """What ``plain_path`` takes, the email package's parser (aiosmtpd's)
    reads the same: address and parameters."""
    argument = f"<{local}@{domain}>{after}"
    plain = plain_path(argument)
    if plain is None:
        return
    address, rest = get_angle_addr(argument)
    assert (plain[1], plain[2]) == (address.addr_spec, rest)
    assert plain[0] == address.addr_spec.rpartition("@")[0]


def test_the_plain_path_fast_path_takes_the_common_forms():
    assert plain_path("<Jo.Ann+tag@Mail.example.org> SIZE=100 BODY=8BITMIME") == (
        "Jo.Ann+tag", "Jo.Ann+tag@Mail.example.org", "SIZE=100 BODY=8BITMIME")
    for odd in ("<>", "<a..b@c>", "<a@b> (comment) SIZE=1", '<"a b"@c>',
                "<a@[192.0.2.1]>", "<é@b>", " <a@b>"):
        assert plain_path(odd) is None, odd
