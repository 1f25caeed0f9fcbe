"""The POP3 listener over real sockets, driven with poplib."""

from __future__ import annotations

import asyncio
import base64
import io
import poplib
import socket
import threading
import time

import pytest
from django.core.management import call_command

from apps.pop3 import server as pop3_server
from apps.pop3.protocol import to_crlf
from apps.store.events import FolderChanged, subscribe
from apps.store.models import Expunged, Folder, Message
from tests.conftest import CORPORA, ServerThread
from tests.factories import PASSWORD
from tests.pop3.helpers import fill, login, retrieved, sample_messages
from tests.smtp.helpers import make_message, stored


def inbox_uids(address: str) -> list[int]:
    return list(Message.objects.filter(folder__mailbox__address=address, folder__name="INBOX")
                .order_by("uid").values_list("uid", flat=True))


def plain_auth(login_name: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{login_name}\0{password}".encode()).decode()


def test_session_lists_retrieves_and_tops_what_is_stored(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    originals = stored(mailbox.address)
    client = connect()
    assert client.getwelcome().startswith(b"+OK")
    assert login(client, mailbox) == b"+OK maildrop has 3 messages (%d octets)" % sum(
        len(to_crlf(m)) for m in originals)
    count, size = client.stat()
    assert count == 3
    _, listing, _ = client.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert sum(sizes) == size
    for number, original in enumerate(originals, 1):
        data, octets = retrieved(client, number)
        # Line ends normalised to CRLF, dots unstuffed, 8-bit bytes untouched,
        # and the octet count is what LIST announced.
        assert data == to_crlf(original)
        assert octets == sizes[number - 1] == len(data)
        assert client.list(number) == f"+OK {number} {sizes[number - 1]}".encode()
    assert b"caf\xe9 \xff\r\n.dot\r\nno end\r\n" in retrieved(client, 3)[0]
    _, top_lines, _ = client.top(2, 1)
    assert top_lines[-2:] == [b"", b".leading dot"]
    assert top_lines[0].startswith(b"Received:") or top_lines[0].startswith(b"From:")
    assert client.noop() == b"+OK"
    assert client.quit().startswith(b"+OK")
    assert len(stored(mailbox.address)) == 3


def test_top_of_messages_longer_than_its_first_read(connect, mailbox) -> None:
    """TOP reads a message's start in growing ranges (apps/pop3/services.py):
    a header longer than the first read, line counts that end just before,
    at and after each read's end, bare LF line ends and the last line cut by
    a read are all answered as from the whole message."""
    from apps.pop3.protocol import top
    from apps.pop3.services import TOP_FIRST_READ

    long_header = b"".join(b"X-Long-%05d: %s\r\n" % (n, b"h" * 60) for n in range(300))
    body = b"".join(b"body line %05d %s\r\n" % (n, b"b" * (n % 97)) for n in range(2000))
    messages = [b"From: a@pop.example\r\n" + long_header + b"Subject: long\r\n\r\n" + body,
                (b"From: a@pop.example\r\nSubject: bare\r\n\r\n" + body).replace(
                    b"\r\n", b"\n")]
    assert len(long_header) > TOP_FIRST_READ and len(body) > 4 * TOP_FIRST_READ
    fill(mailbox, messages)
    originals = stored(mailbox.address)
    client = connect()
    login(client, mailbox)
    for number, original in enumerate(originals, 1):
        whole = to_crlf(original)
        for lines in (0, 1, 150, 151, 152, 390, 800, 1999, 2000, 5000):
            _, top_lines, _ = client.top(number, lines)
            assert b"".join(line + b"\r\n" for line in top_lines) == top(whole, lines)


def test_uidl_is_stable_and_derived_from_uidvalidity_and_uid(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    inbox = Folder.objects.get(mailbox=mailbox, name="INBOX")
    expected = [f"{inbox.uidvalidity}.{uid}".encode() for uid in inbox_uids(mailbox.address)]
    client = connect()
    login(client, mailbox)
    _, listing, _ = client.uidl()
    assert [line.split()[1] for line in listing] == expected
    assert client.uidl(2) == b"+OK 2 " + expected[1]
    client.dele(1)
    client.quit()
    fill(mailbox, [make_message(mailbox.address, subject="later")])
    again = connect()
    login(again, mailbox)
    _, listing, _ = again.uidl()
    values = [line.split()[1] for line in listing]
    # The survivors keep their values; the newcomer's is new, never the deleted one's.
    assert values[:2] == expected[1:]
    assert values[2] not in expected
    again.quit()


def test_capa_before_and_after_login(connect, mailbox) -> None:
    client = connect()
    capabilities = client.capa()
    for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER",
                 "STLS", "IMPLEMENTATION"):
        assert name in capabilities
    assert capabilities["SASL"] == ["PLAIN"]
    login(client, mailbox)
    after = client.capa()
    assert "STLS" not in after and "USER" not in after and "UIDL" in after
    client.quit()


def test_stls_then_auth_plain(connect, mailbox, client_tls_context) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    client = connect()
    assert client.stls(client_tls_context).startswith(b"+OK")
    assert "STLS" not in client.capa()
    reply = client._shortcmd("AUTH PLAIN " + plain_auth(mailbox.address, PASSWORD))
    assert reply.startswith(b"+OK maildrop has 3 messages")
    assert retrieved(client, 1)[0] == stored(mailbox.address)[0]
    client.quit()


def test_implicit_tls(pop_servers, mailbox, client_tls_context) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    client = poplib.POP3_SSL("127.0.0.1", pop_servers.port("pop3s"), timeout=10,
                             context=client_tls_context)
    assert "STLS" not in client.capa()
    login(client, mailbox)
    assert client.stat()[0] == 3
    assert retrieved(client, 2)[0] == stored(mailbox.address)[1]
    with pytest.raises(poplib.error_proto, match="STLS is not valid"):
        client._shortcmd("STLS")
    client.quit()


def test_auth_plain_without_initial_response_and_cancel(connect, mailbox) -> None:
    client = connect()
    assert client._shortcmd("AUTH") == b"+OK SASL mechanisms follow"
    assert client._getline()[0] == b"PLAIN"
    assert client._getline()[0] == b"."
    client._putcmd("AUTH PLAIN")
    assert client._getline()[0] == b"+ "
    with pytest.raises(poplib.error_proto, match="cancelled"):
        client._shortcmd("*")
    client._putcmd("AUTH PLAIN")
    client._getline()
    assert client._shortcmd(plain_auth(mailbox.address, PASSWORD)).startswith(b"+OK")
    client.quit()


def test_auth_failures_answer_with_response_codes(connect, mailbox, monkeypatch) -> None:
    client = connect()
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] authentication failed"):
        login(client, mailbox, "wrong password")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] authorization identity"):
        client._shortcmd("AUTH PLAIN " + plain_auth(mailbox.address, PASSWORD, "bob@x"))
    with pytest.raises(poplib.error_proto, match="unsupported SASL mechanism"):
        client._shortcmd("AUTH CRAM-MD5")
    with pytest.raises(poplib.error_proto, match="USER first"):
        client.pass_(PASSWORD)

    async def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("database is down")

    monkeypatch.setattr(pop3_server, "aauthenticate", broken)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
        login(client, mailbox)


def test_plaintext_login_refused_before_tls(connect, mailbox, settings,
                                            client_tls_context) -> None:
    settings.MAILHOST_PLAINTEXT_AUTH_LOOPBACK = False  # as for a remote peer
    client = connect()
    capabilities = client.capa()
    assert "USER" not in capabilities and "SASL" not in capabilities
    assert "STLS" in capabilities
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] .*STLS"):
        client.user(mailbox.address)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] .*STLS"):
        client._shortcmd("AUTH PLAIN " + plain_auth(mailbox.address, PASSWORD))
    client.stls(client_tls_context)
    assert login(client, mailbox).startswith(b"+OK")
    client.quit()


def test_lockout_applies(connect, mailbox, settings) -> None:
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    client = connect()
    for _ in range(3):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            login(client, mailbox, "wrong password")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        login(client, mailbox)  # the right password, but locked out


def test_second_session_is_refused_in_use(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    first = connect()
    login(first, mailbox)
    second = connect()
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        login(second, mailbox)
    first.quit()
    assert login(second, mailbox).startswith(b"+OK maildrop has 3")
    second.quit()


def test_in_use_across_listener_processes(pop_servers, listener_process, mailbox) -> None:
    other = listener_process(["pop3"])
    here = poplib.POP3("127.0.0.1", pop_servers.port("pop3"), timeout=10)
    login(here, mailbox)
    there = poplib.POP3("127.0.0.1", other.ports["pop3"], timeout=10)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        login(there, mailbox)
    here.quit()
    assert login(there, mailbox).startswith(b"+OK")
    there.quit()
    assert other.terminate() == 0


def test_dele_then_rset_keeps_everything(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    client = connect()
    login(client, mailbox)
    assert client.dele(2) == b"+OK message 2 deleted"
    assert client.stat()[0] == 2
    with pytest.raises(poplib.error_proto, match="message 2 is deleted"):
        client.retr(2)
    with pytest.raises(poplib.error_proto, match="message 2 is deleted"):
        client.dele(2)
    assert [line.split()[0] for line in client.list()[1]] == [b"1", b"3"]
    assert client.rset().startswith(b"+OK maildrop has 3 messages")
    assert client.stat()[0] == 3
    client.quit()
    assert len(inbox_uids(mailbox.address)) == 3


def wait_for_login(connect, mailbox) -> poplib.POP3:
    """Log in once the previous session's lock is gone (released when the
    server notices the dropped connection)."""
    deadline = time.monotonic() + 10
    while True:
        client = connect()
        try:
            login(client, mailbox)
            return client
        except poplib.error_proto as error:
            if b"IN-USE" not in error.args[0] or time.monotonic() > deadline:
                raise
            client.close()
            time.sleep(0.1)


def test_dropped_connection_deletes_nothing(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    before = inbox_uids(mailbox.address)
    client = connect()
    login(client, mailbox)
    client.dele(1)
    client.dele(3)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    again = wait_for_login(connect, mailbox)
    assert again.stat()[0] == 3
    again.quit()
    assert inbox_uids(mailbox.address) == before
    assert not Expunged.objects.exists()


class EventRecorder:
    """Subscribes to the store's change events on a loop of its own, as an
    IMAP session with the INBOX selected does."""

    def __init__(self, mailbox_id: int) -> None:
        self.events: list[FolderChanged] = []
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(mailbox_id),))
        self._thread.start()
        self._ready.wait(10)

    async def _main(self, mailbox_id: int) -> None:
        unsubscribe = subscribe(mailbox_id, self.events.append)
        self._ready.set()
        while not self._done.is_set():
            await asyncio.sleep(0.02)
        unsubscribe()

    def stop(self) -> list[FolderChanged]:
        time.sleep(0.1)  # let call_soon_threadsafe callbacks run
        self._done.set()
        self._thread.join(10)
        return self.events


def test_dele_then_quit_expunges_through_the_store(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    inbox = Folder.objects.get(mailbox=mailbox, name="INBOX")
    uids = inbox_uids(mailbox.address)
    recorder = EventRecorder(mailbox.pk)
    client = connect()
    login(client, mailbox)
    client.dele(1)
    client.dele(3)
    assert inbox_uids(mailbox.address) == uids  # nothing happens before QUIT
    assert client.quit() == b"+OK Mailhost POP3 server signing off (1 messages left)"
    events = recorder.stop()
    assert inbox_uids(mailbox.address) == [uids[1]]
    inbox.refresh_from_db()
    assert inbox.message_count == 1
    tombstones = Expunged.objects.filter(folder=inbox)
    assert sorted(t.uid for t in tombstones) == [uids[0], uids[2]]
    assert {t.modseq for t in tombstones} == {inbox.highestmodseq}
    # What an IMAP session with the INBOX selected is woken by.
    assert FolderChanged(mailbox.pk, inbox.pk, inbox.highestmodseq) in events


def test_quit_that_cannot_remove_says_so_and_frees_the_mailbox(connect, mailbox,
                                                              monkeypatch) -> None:
    fill(mailbox, sample_messages(mailbox.address))

    async def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("database is down")

    monkeypatch.setattr(pop3_server.services, "aremove_deleted", broken)
    client = connect()
    login(client, mailbox)
    client.dele(1)
    with pytest.raises(poplib.error_proto,
                       match=r"-ERR \[SYS/TEMP\] some deleted messages not removed"):
        client.quit()
    assert len(inbox_uids(mailbox.address)) == 3
    again = connect()
    assert login(again, mailbox).startswith(b"+OK maildrop has 3")
    again.quit()


def test_malformed_commands_get_reasons(connect, mailbox) -> None:
    client = connect()
    for command, reason in [
        ("BOGUS", "unknown command"),
        ("RETR 1", "RETR is not valid in the AUTHORIZATION state"),
        ("USER", "USER takes 1 argument"),
    ]:
        with pytest.raises(poplib.error_proto, match=reason):
            client._shortcmd(command)
    login(client, mailbox)
    for command, reason in [
        ("RETR", "RETR takes 1 argument"),
        ("RETR abc", "message number must be a decimal number"),
        ("RETR 1", "no message 1"),
        ("TOP 1", "TOP takes 2 argument"),
        ("USER x", "USER is not valid in the TRANSACTION state"),
        ("STLS", "STLS is not valid in the TRANSACTION state"),
    ]:
        with pytest.raises(poplib.error_proto, match=reason):
            client._shortcmd(command)
    client.quit()


def test_long_lines_and_too_many_bad_commands(connect, settings) -> None:
    settings.MAILHOST_POP3_MAX_BAD_COMMANDS = 3
    client = connect()
    client._putline(b"NOOP " + b"x" * 5000)
    assert client._getline()[0] == b"-ERR line longer than 1024 octets"
    with pytest.raises(poplib.error_proto, match="unknown command"):
        client._shortcmd("NOPE")
    with pytest.raises(poplib.error_proto, match="too many bad commands, closing"):
        client._shortcmd("NOPE")
    assert client.file.readline() == b""  # closed by the server


def test_pipelined_commands_are_answered_in_order(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    client = connect()
    client.sock.sendall(f"USER {mailbox.address}\r\nPASS {PASSWORD}\r\nSTAT\r\n"
                        "DELE 1\r\nSTAT\r\nQUIT\r\n".encode())
    replies = [client._getline()[0] for _ in range(6)]
    assert replies[0] == b"+OK send PASS"
    assert replies[1].startswith(b"+OK maildrop has 3 messages")
    assert replies[2].startswith(b"+OK 3 ")
    assert replies[3] == b"+OK message 1 deleted"
    assert replies[4].startswith(b"+OK 2 ")
    assert replies[5].startswith(b"+OK Mailhost POP3 server signing off")
    assert len(inbox_uids(mailbox.address)) == 2


def test_stls_discards_commands_sent_before_the_handshake(connect, mailbox,
                                                         client_tls_context) -> None:
    client = connect()
    client.sock.sendall(f"STLS\r\nUSER {mailbox.address}\r\n".encode())
    assert client._getline()[0].startswith(b"+OK")
    tls = client_tls_context.wrap_socket(client.sock, server_hostname="127.0.0.1")
    file = tls.makefile("rb")
    tls.sendall(b"PASS " + PASSWORD.encode() + b"\r\n")
    # The USER sent in clear before the handshake was not taken.
    assert file.readline() == b"-ERR USER first\r\n"
    tls.close()


def test_idle_session_is_closed_without_update(pop_servers, mailbox, settings) -> None:
    settings.MAILHOST_POP3_IDLE_TIMEOUT = 1
    fill(mailbox, sample_messages(mailbox.address))
    client = poplib.POP3("127.0.0.1", pop_servers.port("pop3"), timeout=10)
    login(client, mailbox)
    client.dele(1)
    assert client.file.readline() == b""  # closed, without a reply (RFC 1939 §3)
    client.close()
    assert len(inbox_uids(mailbox.address)) == 3


def test_shutdown_closes_idle_sessions(transactional_db, mailbox) -> None:
    servers = ServerThread(["pop3"]).start()
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
    login(client, mailbox)
    servers.stop()
    assert client.file.readline() == b""
    client.close()



@pytest.mark.slow
def test_every_tricky_mime_message_is_served_as_stored(connect, mailbox,
                                                       monkeypatch) -> None:
    """The mime/ corpus (LF and CRLF files, no header/body separator, broken
    boundaries, megabytes of nesting): RETR gives each one back with CRLF line
    ends and exactly as many octets as LIST said; TOP works on all of them."""
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 24)  # some lines exceed poplib's 2048
    originals = [path.read_bytes() for path in sorted((CORPORA / "mime").iterdir())
                 if path.suffix != ".json"]
    fill(mailbox, originals)
    client = connect()
    login(client, mailbox)
    _, listing, _ = client.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert len(sizes) == len(originals)
    for number, original in enumerate(originals, 1):
        data, octets = retrieved(client, number)
        assert data == to_crlf(original)
        assert octets == sizes[number - 1]
        _, lines, _ = client.top(number, 0)
        assert len(lines) <= data.count(b"\r\n")
    client.quit()


def test_leave_a_copy_hides_from_pop3_and_keeps_for_imap(connect, mailbox) -> None:
    fill(mailbox, sample_messages(mailbox.address))
    call_command("pop3leavecopy", mailbox.address, "on", stdout=io.StringIO())
    uids = inbox_uids(mailbox.address)
    client = connect()
    login(client, mailbox)
    _, before, _ = client.uidl()
    client.dele(1)
    client.dele(2)
    client.quit()
    # Still in the folder (what IMAP shows), nothing expunged...
    assert inbox_uids(mailbox.address) == uids
    assert not Expunged.objects.exists()
    # ...but gone from POP3, and the rest keeps its unique-id.
    again = connect()
    assert login(again, mailbox).startswith(b"+OK maildrop has 1 messages")
    assert again.uidl()[1] == [b"1 " + before[2].split()[1]]
    again.quit()
    call_command("pop3leavecopy", mailbox.address, "off", stdout=io.StringIO())
    third = connect()
    login(third, mailbox)
    third.dele(1)
    third.quit()
    assert inbox_uids(mailbox.address) == uids[:2]
