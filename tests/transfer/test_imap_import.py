"""importmail from a real IMAP server other than ours: Debian's Dovecot with a
throwaway configuration (bench/common.py), its Maildir filled over IMAP with
several folders, flags, keywords and internal dates. What a client then sees
over OUR IMAP listener is every message once, with its flags and INTERNALDATE,
however often the import runs; and Dovecot serves our Maildir export of it
the same way."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.core.management import call_command
from imapclient import IMAPClient

from apps.antispam.corpus import message_from_file_bytes
from bench.common import Dovecot
from tests.conftest import CORPORA, ServerThread
from tests.factories import PASSWORD, make_mailbox

REMOTE_USER = "remote@dovecot.example"
EXPORT_USER = "export@dovecot.example"
REMOTE_PASSWORD = "remote password 1"
# Remote folder (Maildir++: "." is Dovecot's delimiter) -> the message samples
# it gets, each with its flags and internal date.
ZONE = timezone(timedelta(hours=-7))
FILLING = {
    "INBOX": [
        ("ham/easy_ham.00001.7c53336b37003a9286aba55d2945844c", (r"\Seen", "$Label1"),
         datetime(2021, 3, 4, 5, 6, 7, tzinfo=ZONE)),
        ("mime/flanker__complaints__yahoo.eml", (), datetime(2022, 1, 1, 0, 0, 1, tzinfo=ZONE)),
    ],
    "Lists.python": [
        ("ham/easy_ham.00074.71045f0bdb236b814e4729d318bd6509",
         (r"\Seen", r"\Answered", r"\Flagged", "work"),
         datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("ham/easy_ham.00002.9c4069e25e1ef370c078db7ee85ff9ac", (r"\Draft",),
         datetime(2020, 6, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ],
    "Archive.2023": [
        ("mime/rubymail__attachment_emails__attachment_message_rfc822.eml", (r"\Deleted",),
         datetime(2023, 7, 8, 9, 10, 11, tzinfo=ZONE)),
    ],
}
OURS = {"INBOX": "INBOX", "Lists.python": "Lists/python", "Archive.2023": "Archive/2023"}
LATE = "ham/easy_ham.00003.860e3c3cee1b42ead714c5c874fe25f7"


def corpus_message(name: str) -> bytes:
    return message_from_file_bytes((CORPORA / name).read_bytes())


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot({}, connections=10, user=REMOTE_USER, password=REMOTE_PASSWORD,
                     extra_users=[EXPORT_USER])
    with connect(server.port, REMOTE_USER, REMOTE_PASSWORD) as client:
        for folder, messages in FILLING.items():
            if folder != "INBOX":
                client.create_folder(folder)
            for sample, flags, when in messages:
                client.append(folder, corpus_message(sample), flags, when)
    yield server
    server.stop()


def connect(port: int, user: str, password: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=20)
    client.normalise_times = False
    client.login(user, password)
    return client


def seen_over_imap(port: int, user: str, password: str) -> dict[str, list[tuple]]:
    """Each folder's messages as a client sees them, in UID order: bytes,
    flags, INTERNALDATE (as an instant)."""
    found = {}
    with connect(port, user, password) as client:
        for flags, delimiter, name in client.list_folders():
            if {b"\\Noselect", b"\\NonExistent"} & set(flags):
                continue
            if not client.select_folder(name, readonly=True)[b"EXISTS"]:
                continue
            rows = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            ours = name.replace(delimiter.decode(), "/") if name != "INBOX" else name
            found[ours] = [
                (row[b"BODY[]"], sorted(set(row[b"FLAGS"]) - {b"\\Recent"}),
                 row[b"INTERNALDATE"].timestamp())
                for _uid, row in sorted(rows.items())]
    return found


def import_from(dovecot: Dovecot, address: str, password_file: Path) -> str:
    out = io.StringIO()
    call_command("importmail", address, "--imap", f"127.0.0.1:{dovecot.port}", "--tls", "none",
                 "--user", REMOTE_USER, "--password-file", str(password_file), "--no-progress",
                 stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_import_from_dovecot_twice_then_more_then_after_a_new_uidvalidity(
        dovecot: Dovecot, mail_servers: ServerThread, tmp_path: Path):
    our_port = mail_servers.port("imap")
    password_file = tmp_path / "password"
    password_file.write_text(REMOTE_PASSWORD + "\n")
    alice = make_mailbox("alice@ours.example")
    remote = seen_over_imap(dovecot.port, REMOTE_USER, REMOTE_PASSWORD)
    assert sorted(remote) == sorted(OURS.values())
    assert sum(len(rows) for rows in remote.values()) == 5

    assert import_from(dovecot, alice.address, password_file).startswith(
        "imported 5 messages")
    assert seen_over_imap(our_port, alice.address, PASSWORD) == remote
    assert import_from(dovecot, alice.address, password_file).startswith(
        "imported 0 messages (0 bytes); 5 were there already")
    assert seen_over_imap(our_port, alice.address, PASSWORD) == remote

    # Mail that arrived at the old server since: only that is copied.
    with connect(dovecot.port, REMOTE_USER, REMOTE_PASSWORD) as client:
        client.append("INBOX", corpus_message(LATE), [r"\Flagged"],
                      datetime(2024, 2, 29, 1, 2, 3, tzinfo=ZONE))
    remote = seen_over_imap(dovecot.port, REMOTE_USER, REMOTE_PASSWORD)
    assert import_from(dovecot, alice.address, password_file).startswith(
        "imported 1 messages")
    assert seen_over_imap(our_port, alice.address, PASSWORD) == remote

    # The old server renumbers a folder (a new UIDVALIDITY): its messages are
    # matched by content, and none is filed twice.
    folder = dovecot.mail_dir(REMOTE_USER) / ".Lists.python"
    before = status_uidvalidity(dovecot, "Lists.python")
    uidlist = folder / "dovecot-uidlist"
    uidlist.write_text(re.sub(r" V(\d+) ", lambda m: f" V{int(m.group(1)) + 1000} ",
                              uidlist.read_text(), count=1))
    for index in folder.glob("dovecot.index*"):
        index.unlink()
    assert status_uidvalidity(dovecot, "Lists.python") == before + 1000
    assert import_from(dovecot, alice.address, password_file).startswith(
        "imported 0 messages (0 bytes); 6 were there already")
    assert seen_over_imap(our_port, alice.address, PASSWORD) == remote

    # Our Maildir export of the copy, served by Dovecot, shows the same mail.
    home = dovecot.mail_dir(EXPORT_USER)
    shutil.rmtree(home)
    call_command("exportmail", alice.address, "--maildir", str(home), "--no-progress",
                 stdout=io.StringIO(), stderr=io.StringIO())
    subprocess.run(["chown", "-R", "mail:mail", str(home)], check=True)
    assert seen_over_imap(dovecot.port, EXPORT_USER, REMOTE_PASSWORD) == remote


def status_uidvalidity(dovecot: Dovecot, folder: str) -> int:
    with connect(dovecot.port, REMOTE_USER, REMOTE_PASSWORD) as client:
        return client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]
