"""Connection limits and the greeting timeout on every listener, over real
sockets from 127.0.0.2 (127.0.0.1 stays exempt, as loopback is by default)."""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from apps.mailservers.listeners import LISTENERS
from tests.conftest import ServerThread

PER_IP = 100
TOTAL = 150
GREETINGS = {"smtp": b"220 ", "submission": b"220 ", "smtps": b"220 ",
             "imap": b"* OK ", "imaps": b"* OK ", "pop3": b"+OK ", "pop3s": b"+OK ",
             "managesieve": b'"IMPLEMENTATION" "Mailhost"'}
REFUSALS = {"smtp": b"421 4.7.0 ", "submission": b"421 4.7.0 ", "smtps": b"421 4.7.0 ",
            "imap": b"* BYE ", "imaps": b"* BYE ", "pop3": b"-ERR [SYS/TEMP] ",
            "pop3s": b"-ERR [SYS/TEMP] ", "managesieve": b"BYE (TRYLATER) "}


def _servers(settings, greeting_timeout: int) -> Iterator[ServerThread]:
    settings.MAILHOST_RATE_LIMIT_EXEMPT = ["127.0.0.1/32"]
    settings.MAILHOST_MAX_CONNECTIONS_PER_IP = PER_IP
    settings.MAILHOST_MAX_CONNECTIONS = TOTAL
    settings.MAILHOST_GREETING_TIMEOUT = greeting_timeout
    server = ServerThread(list(LISTENERS)).start()
    yield server
    server.stop()


@pytest.fixture
def limited_servers(transactional_db, settings) -> Iterator[ServerThread]:
    # Long enough for the first of a few hundred clients to wait for the last.
    yield from _servers(settings, 600)


@pytest.fixture
def impatient_servers(transactional_db, settings) -> Iterator[ServerThread]:
    yield from _servers(settings, 1)


@functools.cache
def _client_context() -> ssl.SSLContext:
    """One for all clients: making a context loads the system's CA store, which
    cost more than the handshake itself when done for each of 150 clients."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Client:
    """One connection from ``source``, TLS from the start on the implicit-TLS ports."""

    def __init__(self, port: int, *, source: str, tls: bool) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                       source_address=(source, 0))
        if tls:
            raw = _client_context().wrap_socket(raw)
        self.sock = raw
        self.file = raw.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        """The server closed the connection (after anything it still had to say)."""
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            while self.file.readline():
                pass
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


def _open(server: ServerThread, name: str, source: str) -> Client:
    return Client(server.port(name), source=source, tls=LISTENERS[name].implicit_tls)


def _greeted(server: ServerThread, name: str) -> Client:
    """A connection from 127.0.0.2 that has read the greeting."""
    client = _open(server, name, "127.0.0.2")
    assert client.line().startswith(GREETINGS[name])
    return client


def _closed_saying(client: Client, said: bytes) -> None:
    """The next thing the server does is to say ``said`` (or nothing) and close."""
    line = client.line()  # blocks until the server acts
    assert line.startswith(said) if said else line == b""
    assert client.closed()
    client.close()


@pytest.mark.parametrize("name", list(LISTENERS))
def test_connections_over_the_limits_are_refused_in_the_protocols_words(
    limited_servers: ServerThread, name: str,
) -> None:
    clients = []
    try:
        for _ in range(PER_IP):
            client = _open(limited_servers, name, "127.0.0.2")
            assert client.line().startswith(GREETINGS[name])
            clients.append(client)
        # One more from the same address: over the per-IP limit.
        refused = _open(limited_servers, name, "127.0.0.2")
        assert refused.line().startswith(REFUSALS[name])
        assert refused.closed()
        refused.close()
        # Another address still gets in, until the listener's total is reached.
        for _ in range(TOTAL - PER_IP):
            client = _open(limited_servers, name, "127.0.0.3")
            assert client.line().startswith(GREETINGS[name])
            clients.append(client)
        refused = _open(limited_servers, name, "127.0.0.4")
        assert refused.line().startswith(REFUSALS[name])
        refused.close()
        # Exempt networks are not counted at all.
        exempt = _open(limited_servers, name, "127.0.0.1")
        assert exempt.line().startswith(GREETINGS[name])
        clients.append(exempt)
        # A connection that ends gives its place back.
        clients.pop(0).close()
        for _ in range(100):  # the server notices the close in its own time
            again = _open(limited_servers, name, "127.0.0.2")
            first = again.line()
            again.close()
            if first.startswith(GREETINGS[name]):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the freed place was not given back: {first!r}")
    finally:
        for client in clients:
            client.close()


SILENT = {"smtp": b"421 4.4.2 ", "imap": b"* BYE ", "pop3": b""}
FIRST_COMMAND = {"smtp": b"NOOP\r\n", "imap": b"a NOOP\r\n", "pop3": b"NOOP\r\n"}
ANSWER = {"smtp": b"250 ", "imap": b"a OK", "pop3": b"-ERR"}  # POP3 NOOP needs a login


@pytest.mark.parametrize("name", ["smtp", "imap", "pop3"])
def test_a_client_silent_after_the_greeting_is_closed(
    impatient_servers: ServerThread, name: str,
) -> None:
    _closed_saying(_greeted(impatient_servers, name), SILENT[name])


@pytest.mark.parametrize("name", ["smtp", "imap", "pop3"])
def test_a_client_that_answered_the_greeting_is_not_cut_off(
    impatient_servers: ServerThread, name: str,
) -> None:
    client = _greeted(impatient_servers, name)
    client.send(FIRST_COMMAND[name])
    assert client.line().startswith(ANSWER[name])
    time.sleep(2)  # twice the greeting timeout
    client.send(FIRST_COMMAND[name])
    assert client.line().startswith(ANSWER[name])
    client.close()


def test_a_tls_handshake_never_finished_is_closed(impatient_servers: ServerThread) -> None:
    """On an implicit-TLS port the handshake is the greeting's answer."""
    raw = socket.create_connection(("127.0.0.1", impatient_servers.port("imaps")), timeout=10,
                                   source_address=("127.0.0.2", 0))
    assert raw.recv(100) == b""  # closed by the server without a handshake
    raw.close()


@pytest.mark.parametrize(("name", "setting", "said"), [
    ("smtp", "MAILHOST_SMTP_TIMEOUT", b"421 4.4.2 "),  # RFC 5321 §4.5.3.2.7
    ("imap", "MAILHOST_IMAP_TIMEOUT", b"* BYE autologout"),  # RFC 3501 §5.4
    ("pop3", "MAILHOST_POP3_IDLE_TIMEOUT", b""),  # RFC 1939 §3: no reply
])
def test_an_idle_session_is_closed_after_its_protocols_timeout(
        limited_servers: ServerThread, settings, name: str, setting: str, said: bytes) -> None:
    setattr(settings, setting, 1)  # read by each new session
    client = _greeted(limited_servers, name)
    client.send(FIRST_COMMAND[name])
    assert client.line().startswith(ANSWER[name])
    _closed_saying(client, said)


def test_an_imap_literal_over_the_limit_is_refused_before_its_octets(
        limited_servers: ServerThread, settings) -> None:
    """RFC 7888 §4: a non-synchronising literal too large is not read into memory."""
    settings.MAILHOST_IMAP_MAX_LITERAL = 1000
    client = _greeted(limited_servers, "imap")
    client.send(b"a APPEND INBOX {1000000000000}\r\n")  # synchronising: no "+" sent
    assert client.line().startswith(b"a NO [TOOBIG]")
    client.send(b"b APPEND INBOX {1000000000000+}\r\n" + b"x" * 65536)
    _closed_saying(client, b"* BYE")

