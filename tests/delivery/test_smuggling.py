"""SMTP smuggling (the 2023 research): a message whose data hides a second
transaction behind an end of data that some receivers honour and others do
not. On the MX, on submission and in our relaying client, over raw sockets:
never two messages where the sender sent one, and nothing we relay carries an
end of data that a lenient receiver (one ending lines at a bare CR or LF)
would find before ours."""

from __future__ import annotations

import base64
import re
import socket
import threading

import pytest

from apps.delivery.client import DeliverySession, OutgoingMessage, OutgoingRecipient
from apps.delivery.models import QueueEntry
from apps.directory import services as directory
from tests.delivery.conftest import run_queue
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import RawSMTP, stored

# End-of-data look-alikes; none of them contains a real "<CRLF>.<CRLF>".
ENDINGS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CR": b"\r.\r",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CR.CRLF": b"\r.\r\n",
    "CR.CR LF": b"\r.\r\n\n",
    "NUL before the dot": b"\r\n\x00.\r\n",
    "NUL after the dot": b"\r\n.\x00\r\n",
    "space before the dot": b"\r\n .\r\n",
}
SMUGGLED = (b"MAIL FROM:<admin@ours.example>\r\nRCPT TO:<carol@example.net>\r\n"
            b"DATA\r\nFrom: admin@ours.example\r\nSubject: smuggled\r\n\r\nevil\r\n")


def _payload(ending: bytes) -> bytes:
    return (b"From: alice@ours.example\r\nTo: carol@example.net\r\nSubject: first\r\n\r\n"
            b"hello" + ending + SMUGGLED + b".\r\n")


def _has_bare_newline(data: bytes) -> bool:
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is not None


def lenient_messages(data: bytes) -> int:
    """How many messages a receiver that ends a line at any CR or LF would cut
    this DATA stream (terminator included) into."""
    return sum(1 for line in re.split(rb"\r\n|\r|\n", data) if line == b".")


class Recorder:
    """A receiving SMTP server that keeps the raw bytes of each DATA."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.data: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                conn.sendall(b"220 recorder.test ESMTP\r\n")
                for line in reader:
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-recorder.test\r\n250 8BITMIME\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 go ahead\r\n")
                        raw = b""
                        while not raw.endswith(b"\r\n.\r\n"):
                            chunk = reader.readline()
                            if not chunk:
                                return
                            raw += chunk
                        self.data.append(raw)
                        conn.sendall(b"250 2.0.0 kept\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 2.0.0 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 2.0.0 ok\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder(settings):
    server = Recorder()
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{server.port}"
    yield server
    server.close()


@pytest.fixture
def hosted(transactional_db):
    make_mailbox("alice@ours.example")
    directory.create_alias("fwd@ours.example", ["carol@example.net"])


def _replies_after(client: RawSMTP, payload: bytes) -> list[bytes]:
    """The replies to the data and to a QUIT after it: two, if the server saw
    one message; more, if it took part of the data for commands."""
    client.send(payload + b"QUIT\r\n")
    replies = []
    while True:
        try:
            replies.append(client.reply()[-1])
        except ConnectionError:
            return replies


@pytest.mark.parametrize("name", list(ENDINGS))
def test_the_mx_takes_one_message_and_relays_no_smuggled_end(
        smtp_port, hosted, recorder, name):
    client = RawSMTP(smtp_port)
    client.command(b"EHLO client.test")
    client.command(b"MAIL FROM:<sender@remote.test>")
    assert client.command(b"RCPT TO:<alice@ours.example>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<fwd@ours.example>")[0].startswith(b"250")
    assert client.command(b"DATA")[0].startswith(b"354")
    data_reply, quit_reply = _replies_after(client, _payload(ENDINGS[name]))
    client.close()
    assert quit_reply.startswith(b"221")
    if b"\n" in ENDINGS[name].replace(b"\r\n", b""):
        # A bare LF is refused (as Postfix's smtpd_forbid_bare_newline does).
        assert data_reply.startswith(b"550 5.5.2")
        assert stored("alice@ours.example") == []
        assert QueueEntry.objects.count() == 0
        return
    # Otherwise it is all one message: a bare CR is data to us.
    assert data_reply.startswith(b"250")
    (got,) = stored("alice@ours.example")
    assert b"Subject: first" in got and b"evil" in got
    # The forwarded copy leaves with every line ended by CRLF.
    assert QueueEntry.objects.count() == 1
    run_queue()
    (relayed,) = recorder.data
    assert lenient_messages(relayed) == 1 and not _has_bare_newline(relayed)
    assert b"evil" in relayed


@pytest.mark.parametrize("name", list(ENDINGS))
def test_submission_takes_one_message_and_refuses_bare_line_ends(
        mail_servers, hosted, recorder, name):
    client = RawSMTP(mail_servers.port("submission"))
    client.command(b"EHLO client.test")
    token = base64.b64encode(f"\0alice@ours.example\0{PASSWORD}".encode())
    assert client.command(b"AUTH PLAIN " + token)[0].startswith(b"235")
    client.command(b"MAIL FROM:<alice@ours.example>")
    assert client.command(b"RCPT TO:<carol@example.net>")[0].startswith(b"250")
    assert client.command(b"DATA")[0].startswith(b"354")
    data_reply, quit_reply = _replies_after(client, _payload(ENDINGS[name]))
    client.close()
    assert quit_reply.startswith(b"221")
    if _has_bare_newline(ENDINGS[name]):
        assert data_reply.startswith(b"550 5.5.2")
        assert QueueEntry.objects.count() == 0
        return
    assert data_reply.startswith(b"250")
    assert QueueEntry.objects.count() == 1
    run_queue()
    (relayed,) = recorder.data
    assert lenient_messages(relayed) == 1 and b"evil" in relayed


@pytest.mark.parametrize("name", list(ENDINGS))
def test_the_relaying_client_never_sends_an_end_a_lenient_receiver_would_see(
        recorder, name):
    message = OutgoingMessage("alice@ours.example", _payload(ENDINGS[name]),
                              [OutgoingRecipient("carol@example.net")])
    session = DeliverySession("recorder.test", "127.0.0.1", recorder.port,
                              helo="mail.mailhost.test", timeout=10)
    assert session.send([message]) == 1
    session.close()
    (relayed,) = recorder.data
    assert lenient_messages(relayed) == 1
    assert not _has_bare_newline(relayed)
    assert message.recipients[0].reply.startswith("250")
