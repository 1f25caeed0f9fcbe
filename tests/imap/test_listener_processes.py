"""IMAP and POP3 in several listener processes on one port
(MAILHOST_IMAP_PROCESSES=2, apps/mailservers/processes.py), with Redis carrying
the folder changes between them or, without it, Unix datagrams
(apps/store/events.py): sessions that the kernel handed to different processes
see each other's flag changes, expunges, new mail and new keywords, an IDLE in
one hears an APPEND or a STORE in the other with no command, the POP3 maildrop
lock holds across them, and the processes start and stop together."""

from __future__ import annotations

import os
import poplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP
from tests.smtp.helpers import make_message

pytestmark = pytest.mark.slow

ALICE = "alice@example.org"
Client = TypeVar("Client")


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _serving_process(client: socket.socket, candidates: set[int]) -> int:
    """The listener process holding the server end of ``client``'s connection:
    the socket whose peer is the client's port (/proc/net/tcp) among the
    candidates' open files."""
    client_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and \
                int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    assert inode is not None, "no server end of the connection"
    for pid in candidates:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue  # closed meanwhile
    raise AssertionError("no listener process holds the connection")


def _one_on_each(connect: Callable[[], Client], sock_of: Callable[[Client], socket.socket],
                 close: Callable[[Client], None], processes: set[int]) -> list[Client]:
    """Connect until one client is served by each of ``processes`` (the
    kernel picks the process that accepts); the spare clients are closed."""
    found: dict[int, Client] = {}
    for _ in range(200):
        client = connect()
        pid = _serving_process(sock_of(client), processes)
        if pid in found:
            close(client)
        else:
            found[pid] = client
        if len(found) == len(processes):
            return list(found.values())
    raise AssertionError(f"every connection went to {set(found)}")


@pytest.fixture
def two_processes(monkeypatch, listener_process) -> Iterator[tuple[int, int, set[int]]]:
    """The IMAP and POP3 ports of a listener with two processes, and the processes."""
    monkeypatch.setenv("MAILHOST_IMAP_PROCESSES", "2")
    # The poller, which finds changes no notice told of, looks too seldom to
    # be what tells an idler here: only a notice between the processes can.
    monkeypatch.setenv("MAILHOST_IMAP_POLL_SECONDS", "600")
    make_mailbox(ALICE)
    process = listener_process(["imap", "pop3"])
    deadline = time.monotonic() + 30
    while len(_children(process.process.pid)) < 2:
        assert time.monotonic() < deadline, "the listener did not start two processes"
        time.sleep(0.05)
    yield process.ports["imap"], process.ports["pop3"], _children(process.process.pid)


def _imap_pair(port: int, processes: set[int]) -> list[RawIMAP]:
    first, second = _one_on_each(lambda: RawIMAP(port), lambda c: c.sock,
                                 lambda c: c.close(), processes)
    for client in (first, second):
        assert client.login(ALICE, PASSWORD)[-1].split()[1] == b"OK"
    return [first, second]


def _append(client: RawIMAP, message: bytes, flags: str = "") -> None:
    client.send(f"a APPEND INBOX ({flags}) {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
    assert client.until("a")[-1].startswith(b"a OK [APPENDUID ")


def test_sessions_in_two_processes_see_each_others_changes(two_processes):
    imap_port, _pop3_port, processes = two_processes
    a, b = _imap_pair(imap_port, processes)
    _append(a, make_message(ALICE, subject="first"))
    _append(a, make_message(ALICE, subject="second"))
    for client in (a, b):
        assert b"* 2 EXISTS\r\n" in client.command("SELECT INBOX")

    # A flag set in one process: the other's poll shows it (RFC 3501 §7.4.2).
    a.command("STORE 1 +FLAGS (\\Flagged)")
    assert b"* 1 FETCH (FLAGS (\\Flagged))\r\n" in b.command("NOOP")
    # An expunge in one process: the other is told (RFC 3501 §7.4.1).
    a.command("STORE 2 +FLAGS (\\Deleted)")
    assert a.command("EXPUNGE")[:-1] == [b"* 2 EXPUNGE\r\n"]
    assert b"* 2 EXPUNGE\r\n" in b.command("NOOP")
    # New mail by the other process.
    _append(b, make_message(ALICE, subject="third"))
    assert b"* 2 EXISTS\r\n" in a.command("NOOP")
    assert b"* 2 EXISTS\r\n" not in b.command("NOOP")  # told once, with its APPEND
    for client in (a, b):
        client.close()


def test_an_idle_in_one_process_hears_an_append_in_the_other(two_processes):
    imap_port, _pop3_port, processes = two_processes
    idler, writer = _imap_pair(imap_port, processes)
    idler.command("SELECT INBOX")
    idler.send(b"i IDLE\r\n")
    assert idler.readline().startswith(b"+ ")
    # Told well before the poller's next look: a notice reached the idler's process.
    idler.sock.settimeout(5)
    _append(writer, make_message(ALICE))
    # Over Redis pub/sub or a datagram, with no command from the idler (RFC 2177).
    assert idler.readline() == b"* 1 EXISTS\r\n"
    assert idler.readline() == b"* 1 RECENT\r\n"
    writer.command("SELECT INBOX")
    writer.command("STORE 1 +FLAGS (\\Seen)")
    assert idler.readline() == b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    idler.send(b"DONE\r\n")
    assert idler.readline().startswith(b"i OK")
    for client in (idler, writer):
        client.close()


def test_a_new_keyword_from_the_other_process_is_announced_before_use(two_processes):
    imap_port, _pop3_port, processes = two_processes
    idler, writer = _imap_pair(imap_port, processes)
    _append(writer, make_message(ALICE))
    idler.command("SELECT INBOX")
    writer.command("SELECT INBOX")
    idler.sock.settimeout(5)
    idler.send(b"i IDLE\r\n")
    assert idler.readline().startswith(b"+ ")
    writer.command("STORE 1 +FLAGS ($Label7)")
    lines = [idler.readline()]
    while not lines[-1].startswith(b"* 1 FETCH"):
        lines.append(idler.readline())
    # RFC 9051 §7.3.5: the keyword is in FLAGS (and PERMANENTFLAGS) before a
    # FETCH uses it.
    assert lines[-1] == b"* 1 FETCH (FLAGS ($Label7 \\Recent))\r\n"
    assert any(line.startswith(b"* FLAGS (") and b"$Label7" in line for line in lines[:-1])
    assert any(line.startswith(b"* OK [PERMANENTFLAGS (") and b"$Label7" in line
               for line in lines[:-1])
    idler.send(b"DONE\r\n")
    assert idler.readline().startswith(b"i OK")
    for client in (idler, writer):
        client.close()


def test_the_processes_start_and_stop_together(monkeypatch, listener_process):
    # Two IMAP processes, one SMTP process: the second child serves IMAP alone.
    monkeypatch.setenv("MAILHOST_IMAP_PROCESSES", "2")
    monkeypatch.setenv("MAILHOST_LISTENER_PROCESSES", "1")
    make_mailbox(ALICE)
    process = listener_process(["smtp", "imap"])
    deadline = time.monotonic() + 30
    while len(children := _children(process.process.pid)) < 2:
        assert time.monotonic() < deadline, "the listener did not start two processes"
        time.sleep(0.05)
    imap_clients = _one_on_each(lambda: RawIMAP(process.ports["imap"]), lambda c: c.sock,
                                lambda c: c.close(), children)
    for client in imap_clients:
        assert client.login(ALICE, PASSWORD)[-1].split()[1] == b"OK"
        client.command("LOGOUT")
        client.close()
    smtp_servers = set()
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", process.ports["smtp"]), timeout=20)
        assert sock.recv(1024).startswith(b"220 ")
        smtp_servers.add(_serving_process(sock, children))
        sock.close()
    assert len(smtp_servers) == 1
    # SIGTERM: a graceful stop of the parent and both children.
    assert process.terminate() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_the_pop3_lock_holds_across_processes(two_processes):
    imap_port, pop3_port, processes = two_processes
    writer = RawIMAP(imap_port)
    writer.login(ALICE, PASSWORD)
    _append(writer, make_message(ALICE))
    writer.close()

    def connect() -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        client.user(ALICE)
        return client

    first, second = _one_on_each(connect, lambda c: c.sock, lambda c: c.close(), processes)
    first.pass_(PASSWORD)
    # RFC 1939 §8: one session holds the maildrop.
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    second.close()
    first.dele(1)
    first.quit()  # RFC 1939 §6: the deletion is done, the lock given up
    third = connect()
    third.pass_(PASSWORD)
    assert third.stat() == (0, 0)
    third.quit()
