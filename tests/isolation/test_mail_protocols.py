"""Tenant isolation over IMAP, POP3 and SMTP AUTH: tenant A's mailbox user,
over real connections to the real listeners, names tenant B's folders and
messages every way a client could (B's folder names, other users' and shared
namespace paths as other servers spell them, relative paths, wildcards,
message numbers and UIDs beyond A's own) and is always refused, never shown
B's data; B's rows stay as they were."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib

import pytest

from tests.conftest import ServerThread
from tests.factories import PASSWORD
from tests.isolation.conftest import B_FOLDER, B_SUBFOLDER, Tenant, leaked, snapshot

B_MAILBOX = "zed@theirs.example"
THEIR_NAMES = [
    B_FOLDER, B_SUBFOLDER, f"/{B_FOLDER}", f"../{B_FOLDER}", f"../{B_MAILBOX}/INBOX",
    f"../{B_MAILBOX}/{B_FOLDER}", f"INBOX/../../{B_MAILBOX}/{B_FOLDER}",
    f"Other Users/{B_MAILBOX}/INBOX", f"Other Users/zed/{B_FOLDER}", f"#shared/{B_FOLDER}",
    f"Shared Folders/{B_MAILBOX}/INBOX", f"#users/zed/{B_FOLDER}", f"~{B_MAILBOX}/INBOX",
    f"~zed/{B_FOLDER}", f"{B_MAILBOX}/INBOX", f"user.zed.{B_FOLDER}", "%", "*", "Bravo%",
    "Bravo*", f"{B_FOLDER}%", "../*", "Other Users/*",
]


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def servers(transactional_db) -> ServerThread:  # type: ignore[no-untyped-def]
    server = ServerThread(["imap", "pop3", "submission"]).start()
    yield server
    server.stop()


def imap_answer(client: imaplib.IMAP4, name: str, *args: str) -> tuple[str, str]:
    """Status and every line the server sent, for one command."""
    try:
        status, data = client.xatom(name, *args) if name not in (
            "SELECT", "EXAMINE") else client.select(args[0], readonly=name == "EXAMINE")
    except imaplib.IMAP4.error as error:  # BAD: imaplib raises
        return "BAD", str(error)
    untagged = {key: client.response(key)[1] for key in list(client.untagged_responses)}
    return status, repr(data) + repr(untagged)


def test_imap_commands_naming_their_folders_and_messages_are_refused(
        servers: ServerThread, tenant_a: Tenant, tenant_b: Tenant) -> None:
    before = snapshot(tenant_b)
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=20)
    client.login(tenant_a.mailbox.address, PASSWORD)
    answers: list[tuple[str, str, str]] = []
    for name in THEIR_NAMES:
        mailbox = quoted(name)
        for command, args in [
            ("SELECT", [mailbox]), ("EXAMINE", [mailbox]),
            ("STATUS", [mailbox, "(MESSAGES UIDNEXT UNSEEN)"]),
            ("DELETE", [mailbox]), ("RENAME", [mailbox, quoted("Taken")]),
            ("SUBSCRIBE", [mailbox]),
            ("GETMETADATA", [mailbox, "/private/comment"]),
            ("SETMETADATA", [mailbox, '(/private/comment "mine now")']),
            ("GETQUOTAROOT", [mailbox]),
        ]:
            status, text = imap_answer(client, command, *args)
            answers.append((f"{command} {mailbox}", status, text))
        status, data = client.append(mailbox, "", None, b"Subject: planted\r\n\r\nx\r\n")
        answers.append((f"APPEND {mailbox}", status, repr(data)))
        for reference, pattern in [('""', mailbox), (mailbox, '"*"'), (mailbox, '"%"')]:
            status, data = client.list(reference, pattern)
            listed = repr(data)
            assert status == "OK" and not leaked(tenant_b, listed, name), (
                f"LIST {reference} {pattern} showed B's folders: {listed}")
            assert "Bravo" not in listed, listed
    # RFC 4469 CATENATE: URLs naming B's messages, appended into A's own folder.
    own = quoted(tenant_a.folder.name)
    for url in [f"/{B_FOLDER.replace(' ', '%20')}/;UID=1", "/INBOX/;UID=99",
                f"/../{B_MAILBOX}/INBOX/;UID=1", f"imap://{B_MAILBOX.replace('@', '%40')}"
                "@127.0.0.1/INBOX/;UID=1", f"/Other%20Users/{B_MAILBOX}/INBOX/;UID=1"]:
        status, text = imap_answer(client, "APPEND", own, f'CATENATE (URL "{url}")')
        answers.append((f"APPEND CATENATE {url}", status, text))
    status, data = client.xatom("LIST", '""', '"*"', "RETURN (STATUS (MESSAGES))")
    assert status == "OK"
    listed = repr(client.response("LIST")) + repr(client.response("STATUS"))
    assert "Bravo" not in listed and not leaked(tenant_b, listed, ""), listed
    status, _ = client.select("INBOX")
    assert status == "OK"
    for name in THEIR_NAMES:
        for command in ("COPY", "MOVE"):
            status, text = imap_answer(client, command, "1", quoted(name))
            answers.append((f"{command} 1 {name}", status, text))
    for command, status, text in answers:
        assert status == "NO", f"{command} answered {status}: {text}"
        assert not leaked(tenant_b, text, command), f"{command} showed B's data: {text}"
    # Message numbers and UIDs beyond A's three messages: nothing, not B's.
    last_uid = max(m.uid for m in tenant_b.messages)
    status, data = client.uid("FETCH", f"1:{last_uid + 5}", "(BODY.PEEK[] ENVELOPE)")
    assert status == "OK" and len([d for d in data if isinstance(d, tuple)]) == 3
    assert not leaked(tenant_b, repr(data), ""), data
    status, data = client.uid("FETCH", f"{len(tenant_a.messages) + 1}:*", "(BODY.PEEK[])")
    assert "Bravo" not in repr(data)
    status, text = imap_answer(client, "FETCH", "4:6", "(BODY.PEEK[])")
    assert status in ("NO", "BAD") and "Bravo" not in text
    status, data = client.search(None, "TEXT", "merger")
    assert status == "OK" and data == [b""]
    client.logout()
    assert snapshot(tenant_b) == before


def test_pop3_and_smtp_auth_refuse_their_mailbox_with_our_password(
        servers: ServerThread, tenant_a: Tenant, tenant_b: Tenant) -> None:
    theirs = tenant_b.mailbox.address
    ours = tenant_a.mailbox.address
    for login in (theirs, "zed", f"../{theirs}", f"{ours}/../{theirs}", f"{theirs}\0{ours}"):
        pop = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=20)
        pop.user(login.replace("\0", ""))
        with pytest.raises(poplib.error_proto, match=r"^b.-ERR"):
            pop.pass_(PASSWORD)
        pop.quit()
    # APOP (RFC 1939 §7) is not offered: refused like any unknown command.
    pop = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=20)
    with pytest.raises(poplib.error_proto, match=r"^b.-ERR"):
        pop._shortcmd(f"APOP {theirs} {'0' * 32}")
    pop.quit()
    # SASL PLAIN with B as the authorization identity and A's own credentials.
    plain = base64.b64encode(f"{theirs}\0{ours}\0{PASSWORD}".encode()).decode()
    pop = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=20)
    with pytest.raises(poplib.error_proto, match=r"^b.-ERR"):
        pop._shortcmd(f"AUTH PLAIN {plain}")
    pop.quit()
    # Signed in as A: message numbers beyond A's own are no one's.
    pop = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=20)
    pop.user(ours)
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    assert count == len(tenant_a.messages) - 1  # INBOX only: one of A's is in a folder
    for number in range(count + 1, count + 6):
        for command in (pop.retr, pop.list, pop.uidl, pop.dele):
            with pytest.raises(poplib.error_proto, match=r"^b.-ERR"):
                command(number)
    listing = b"".join(pop.retr(n)[1][0] for n in range(1, count + 1))
    assert b"Bravo" not in listing
    pop.quit()
    with smtplib.SMTP("127.0.0.1", servers.port("submission"), timeout=20) as smtp:
        smtp.ehlo()
        code, _ = smtp.docmd("AUTH", f"PLAIN {plain}")
        assert code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(theirs, PASSWORD)


