"""Connection, authentication and folder commands over a real socket."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import random
import zlib

import pytest
from imapclient import IMAPClient

from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP


def test_greeting_and_capabilities_before_and_after_login(imap_port, mailbox):
    raw = RawIMAP(imap_port)
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    before = raw.command("CAPABILITY")[0]
    assert b" STARTTLS" in before and b" AUTH=PLAIN" in before
    assert b"UIDPLUS" not in before
    after = raw.login(mailbox.address, PASSWORD)[-1]
    assert after.startswith(b"t2 OK [CAPABILITY IMAP4rev1 ")
    for extension in (b"UIDPLUS", b"MOVE", b"IDLE", b"CONDSTORE", b"QRESYNC", b"ESEARCH",
                      b"SPECIAL-USE", b"LITERAL+", b"QUOTA", b"STATUS=SIZE", b"NAMESPACE"):
        assert b" " + extension in after
    assert b"STARTTLS" not in after
    assert raw.command("LOGOUT")[0] == b"* BYE logging out\r\n"


def test_non_loopback_rules_need_tls_before_login(imap_port, mailbox, settings,
                                                  client_tls_context):
    settings.MAILHOST_PLAINTEXT_AUTH_LOOPBACK = False
    raw = RawIMAP(imap_port)
    assert b"LOGINDISABLED" in raw.greeting and b"AUTH=PLAIN" not in raw.greeting
    assert raw.login(mailbox.address, PASSWORD)[-1].startswith(b"t1 NO [PRIVACYREQUIRED]")
    # Anything pipelined after STARTTLS in the clear must be thrown away.
    raw.send(b"t2 STARTTLS\r\nt3 CAPABILITY\r\n")
    assert raw.readline() == b"t2 OK begin TLS negotiation now\r\n"
    raw.sock = client_tls_context.wrap_socket(raw.sock, server_hostname="localhost")
    raw.file = raw.sock.makefile("rb")
    capability = raw.command("CAPABILITY")
    assert capability[0].startswith(b"* CAPABILITY ") and b"AUTH=PLAIN" in capability[0]
    assert b"STARTTLS" not in capability[0] and len(capability) == 2
    assert raw.login(mailbox.address, PASSWORD)[-1].startswith(b"t3 OK")


def test_implicit_tls_and_imapclient(mail_servers, mailbox, client_tls_context):
    port = mail_servers.port("imaps")
    with IMAPClient("127.0.0.1", port=port, ssl=True, ssl_context=client_tls_context,
                    timeout=20) as client:
        client.ssl_context.check_hostname = False
        client.login(mailbox.address, PASSWORD)
        assert b"MOVE" in client.capabilities()
        folders = {name for _flags, _delim, name in client.list_folders()}
        assert {"INBOX", "Sent", "Trash"} <= folders


def test_starttls_with_imaplib(imap_port, mailbox, client_tls_context):
    client = imaplib.IMAP4("127.0.0.1", imap_port, timeout=20)
    client.starttls(client_tls_context)
    assert client.login(mailbox.address, PASSWORD)[0] == "OK"
    client.logout()


def test_wrong_password_and_lockout(imap_port, mailbox, settings):
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 2
    raw = RawIMAP(imap_port)
    for _ in range(2):
        assert b"NO [AUTHENTICATIONFAILED]" in raw.login(mailbox.address, "wrong")[-1]
    # Locked out now: even the right password is refused.
    assert b"NO [AUTHENTICATIONFAILED]" in raw.login(mailbox.address, PASSWORD)[-1]


def test_authenticate_plain_with_initial_response_and_continuation(imap_port, mailbox):
    token = base64.b64encode(f"\0{mailbox.address}\0{PASSWORD}".encode())
    raw = RawIMAP(imap_port)
    assert raw.command(b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"t1 OK")
    raw = RawIMAP(imap_port)
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.readline() == b"+ \r\n"
    raw.send(token + b"\r\n")
    assert raw.until("a")[-1].startswith(b"a OK")
    raw = RawIMAP(imap_port)
    raw.send(b"b AUTHENTICATE PLAIN\r\n")
    raw.readline()
    raw.send(b"*\r\n")
    assert raw.until("b")[-1].startswith(b"b BAD")
    client = imaplib.IMAP4("127.0.0.1", imap_port)
    client.authenticate("PLAIN", lambda _: f"\0{mailbox.address}\0{PASSWORD}".encode())
    assert client.state == "AUTH"
    client.logout()


def test_commands_in_the_wrong_state_and_bad_syntax(imap_port, mailbox, settings):
    settings.MAILHOST_IMAP_MAX_BAD_COMMANDS = 4
    raw = RawIMAP(imap_port)
    assert raw.command("SELECT INBOX")[-1] == b"t1 BAD SELECT is not allowed now\r\n"
    assert raw.command("FETCH 1 (FLAGS")[-1].startswith(b"t2 BAD ")
    raw.login(mailbox.address, PASSWORD)
    assert raw.command("FETCH 1 FLAGS")[-1].startswith(b"t4 BAD")
    assert raw.command("BOGUS")[-1] == b"t5 BAD unknown command BOGUS\r\n"
    raw.send(b"x BOGUS\r\n")
    assert raw.readline().startswith(b"x BAD")
    assert raw.readline().startswith(b"* BYE")


def test_literal_limits(imap_port, mailbox, settings):
    settings.MAILHOST_IMAP_MAX_LITERAL = 100
    settings.MAILHOST_IMAP_MAX_LINE = 1000
    raw = RawIMAP(imap_port)
    raw.login(mailbox.address, PASSWORD)
    raw.send(b"a APPEND INBOX {5000}\r\n")
    assert raw.readline().startswith(b"a NO [TOOBIG]")
    assert raw.command("NOOP")[-1].startswith(b"t2 OK")
    raw.send(b"b NOOP " + b"x" * 2000 + b"\r\n")
    assert raw.readline().startswith(b"* BYE")


def test_list_patterns_special_use_children_and_mutf7(connect):
    client = connect()
    assert client.create("Projekte/Entw&APw-rfe")[0] == "OK"
    assert client.create("Work/2024")[0] == "OK"
    _typ, lines = client.list('""', "*")
    listed = {line.rsplit(b' "/" ', 1)[1]: line for line in lines}
    assert b"\\HasChildren" in listed[b"Projekte"]
    assert b"\\HasNoChildren" in listed[b"Projekte/Entw&APw-rfe"]
    assert b"\\Sent" in listed[b"Sent"] and b"\\Junk" in listed[b"Junk"]
    _typ, lines = client.list('""', "%")
    assert b"Work" in b" ".join(lines) and b"Work/2024" not in b" ".join(lines)
    _typ, lines = client.list("Work/", "%")
    assert lines == [b'(\\HasNoChildren) "/" Work/2024']
    _typ, lines = client.list('""', "inbox")
    assert lines == [b'(\\HasNoChildren) "/" INBOX']
    _typ, lines = client.list('""', '""')
    assert lines == [b'(\\Noselect) "/" ""']
    assert client.create("Bad&Name")[0] == "NO"


def test_list_extended_and_list_status(connect):
    client = connect()
    client.create("Lists/Sub")
    client.subscribe("Lists/Sub")  # CREATE subscribes nothing (RFC 3501 §6.3.3)
    typ, lines = client._simple_command(
        "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "Lists")
    typ, lines = client._untagged_response(typ, lines, "LIST")
    assert lines == [b'(\\HasChildren) "/" Lists ("CHILDINFO" ("SUBSCRIBED"))']
    typ, lines = client._simple_command("LIST", '""', "%", "RETURN", "(SPECIAL-USE STATUS "
                                        "(MESSAGES UIDNEXT))")
    assert typ == "OK"
    statuses = client.untagged_responses.pop("STATUS")
    client.untagged_responses.pop("LIST")
    assert b"INBOX (MESSAGES 0 UIDNEXT 1)" in statuses
    typ, lines = client._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    specials = client.untagged_responses.pop("LIST")
    assert len(specials) == 5 and all(b"\\HasNoChildren \\" in s for s in specials)


def test_create_delete_rename_subscribe(connect):
    client = connect()
    assert client.create("A/B")[0] == "OK"
    assert client.create("A/B")[1][0].startswith(b"[ALREADYEXISTS]")
    assert client.create("A/../../other")[0] == "NO"
    assert client.create("INBOX")[0] == "NO"
    assert client.rename("A", "C")[0] == "OK"
    names = {line.rsplit(b" ", 1)[1] for line in client.list()[1]}
    assert b"C/B" in names and b"A" not in names and b"A/B" not in names
    assert client.delete("C/B")[0] == "OK"
    assert client.delete("Nope")[1][0].startswith(b"[NONEXISTENT]")
    assert client.delete("INBOX")[0] == "NO"
    assert client.subscribe("C")[0] == "OK"
    assert client.unsubscribe("Trash")[0] == "OK"
    _typ, lines = client.lsub('""', "*")
    assert b"C" in b" ".join(lines) and b"Trash" not in b" ".join(lines)
    client._simple_command("CREATE", "Rubbish", "(USE (\\Trash))")
    _typ, lines = client.list('""', "Rubbish")
    assert b"\\Trash" in lines[0]
    # RFC 3501 §6.3.5: renaming INBOX moves its mail, INBOX stays.
    client.append("INBOX", None, None, b"Subject: x\r\n\r\nbody\r\n")
    assert client.rename("INBOX", "Saved")[0] == "OK"
    assert client.status("INBOX", "(MESSAGES)")[1] == [b"INBOX (MESSAGES 0)"]
    assert client.status("Saved", "(MESSAGES)")[1] == [b"Saved (MESSAGES 1)"]


def test_status_enable_id_namespace_quota(connect, mailbox):
    mailbox.quota = 10 * 1024
    mailbox.save()
    client = connect()
    client.append("INBOX", "(\\Seen)", None, b"Subject: a\r\n\r\n" + b"x" * 2000)
    client.append("INBOX", None, None, b"Subject: b\r\n\r\nbody\r\n")
    typ, data = client.status(
        "INBOX", "(MESSAGES RECENT UIDNEXT UNSEEN SIZE HIGHESTMODSEQ DELETED APPENDLIMIT)")
    assert data[0].startswith(b"INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1 SIZE 2034 ")
    assert client._simple_command("ENABLE", "CONDSTORE", "X-UNKNOWN")[0] == "OK"
    assert client.untagged_responses.pop("ENABLED") == [b"CONDSTORE"]
    assert client.xatom("ID", '("name" "test")')[0] == "OK"
    assert client.untagged_responses.pop("ID")[0].startswith(b'("name" "Mailhost"')
    assert client.namespace()[1] == [b'(("" "/")) NIL NIL']
    typ, data = client.getquotaroot("INBOX")
    assert data == [[b'INBOX ""'], [b'"" (STORAGE 2 10)']]
    assert client.setquota('""', "(STORAGE 1)")[0] == "NO"
    # Over quota: APPEND refused with the RFC 9208 code.
    typ, data = client.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"y" * 9000)
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")


def test_compress_deflate(imap_port, mailbox):
    raw = RawIMAP(imap_port)
    raw.login(mailbox.address, PASSWORD)
    assert raw.command("COMPRESS DEFLATE")[-1] == b"t2 OK DEFLATE active\r\n"
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    decompressor = zlib.decompressobj(-15)
    raw.send(compressor.compress(b"c1 NOOP\r\nc2 COMPRESS DEFLATE\r\n")
             + compressor.flush(zlib.Z_SYNC_FLUSH))
    received = b""
    while b"c2 " not in received:
        received += decompressor.decompress(raw.sock.recv(4096))
    assert b"c1 OK" in received and b"c2 NO [COMPRESSIONACTIVE]" in received


@pytest.mark.parametrize("name", ["..", "a//b", "/etc", "a/./b"])
def test_tricky_folder_names_are_refused(connect, name):
    client = connect()
    typ, _ = client.create(f'"{name}"')
    assert typ == "NO"
    assert client.select(f'"{name}"')[0] == "NO"


def test_hostile_input_never_hurts_a_neighbour(imap_port, mailbox):
    # Random and adversarial bytes on one connection; a logged-in neighbour
    # keeps working and the server still accepts new connections.
    neighbour = RawIMAP(imap_port)
    neighbour.login(mailbox.address, PASSWORD)
    neighbour.command("SELECT INBOX")
    rng = random.Random(3501)
    payloads = [
        b"a LOGIN {99999999999999999999}\r\n", b"a FETCH 1:* (BODY[" + b"1." * 500 + b"])\r\n",
        b"a SEARCH " + b"(" * 500 + b"ALL" + b")" * 500 + b"\r\n", b"\x00\xff\r\n" * 50,
        b"a APPEND INBOX {3+}\r\nab", b"a UID FETCH 4294967296:* FLAGS\r\n",
        b"a LIST \"\" \"" + b"%*" * 1000 + b"\"\r\n",
    ] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(30)]
    for payload in payloads:
        hostile = RawIMAP(imap_port)
        with contextlib.suppress(OSError):
            hostile.send(payload + b"\r\nz LOGOUT\r\n")
            hostile.sock.settimeout(5)
            while hostile.sock.recv(65536):
                pass
        hostile.close()
        assert neighbour.command("NOOP")[-1].split(b" ")[1] == b"OK"
    assert RawIMAP(imap_port).greeting.startswith(b"* OK")
