"""Real IMAP clients from Debian sync a 500-message mailbox with several folders
to a local Maildir and back: changes and deletions travel both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apps.store import services as store
from apps.store.models import Flag, Message
from tests.conftest import require_program
from tests.factories import PASSWORD
from tests.smtp.helpers import make_message

FOLDERS = {"INBOX": 300, "Work": 100, "Work/Reports": 50, "Archive": 50}


@pytest.fixture
def filled(mailbox):  # type: ignore[no-untyped-def]
    store.create_folder(mailbox, "Work/Reports")
    requests = [
        store.DeliveryRequest([mailbox.pk], make_message(
            mailbox.address, subject=f"{folder} {index}", body=f"message {index} of {folder}"),
            folder=folder, fallback_to_inbox=False)
        for folder, count in FOLDERS.items() for index in range(count)]
    for start in range(0, len(requests), 100):
        assert store.deliver_batch(requests[start:start + 100]) == [None] * len(
            requests[start:start + 100])
    return mailbox


def maildir_messages(folder: Path) -> list[Path]:
    return sorted([*folder.glob("cur/*"), *folder.glob("new/*")])


def server_subjects(mailbox, folder: str) -> set[str]:  # type: ignore[no-untyped-def]
    return set(Message.objects.filter(folder__mailbox=mailbox, folder__name=folder)
               .values_list("blob__subject", flat=True))


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def local_changes(folder: Path, new_subject: str) -> tuple[str, str]:
    """Delete one message, mark another seen, add a new one; returns the
    subjects deleted and marked."""
    messages = maildir_messages(folder)
    deleted, marked = messages[0], messages[1]
    deleted_subject = _subject(deleted)
    deleted.unlink()
    seen_name = marked.name.split(":2,")[0] + ":2,S"
    marked.rename(folder / "cur" / seen_name)
    (folder / "new" / f"1700000000.local{new_subject.replace(' ', '_')}.host").write_bytes(
        make_message("alice@example.test", subject=new_subject))
    return deleted_subject, _subject(folder / "cur" / seen_name)


def _subject(path: Path) -> str:
    for line in path.read_bytes().splitlines():
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    return ""


def remote_changes(mailbox, folder: str) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """Flag one message, expunge another, deliver a new one on the server."""
    box = store.get_folder(mailbox, folder)
    uids = list(Message.objects.filter(folder=box).order_by("uid").values_list("uid", flat=True))
    flagged, gone = uids[-1], uids[-2]
    subjects = dict(Message.objects.filter(folder=box).values_list("uid", "blob__subject"))
    store.set_flags(box, [flagged], mode="add", flags=Flag.FLAGGED)
    store.remove(box, [gone])
    store.deliver([mailbox], make_message(mailbox.address, subject="from the server"),
                  folder=folder)
    return subjects[flagged], subjects[gone], "from the server"


def check_round_trip(mailbox, local_inbox: Path, sync) -> None:  # type: ignore[no-untyped-def]
    deleted, marked = local_changes(local_inbox, "from the maildir")
    flagged, gone, arrived = remote_changes(mailbox, "INBOX")
    sync()
    subjects = server_subjects(mailbox, "INBOX")
    assert "from the maildir" in subjects and deleted not in subjects
    seen = Message.objects.get(folder__mailbox=mailbox, folder__name="INBOX",
                               blob__subject=marked)
    assert seen.flags & Flag.SEEN
    local = {_subject(p): p.name for p in maildir_messages(local_inbox)}
    assert arrived in local and gone not in local
    assert "F" in local[flagged].split(":2,")[1]
    assert len(local) == len(subjects) == 300


def test_mbsync_round_trip(imap_port, filled, tmp_path):
    mbsync = require_program("mbsync")
    mail = tmp_path / "mail"
    mail.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {imap_port}
User {filled.address}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")

    def sync() -> None:
        run([mbsync, "-c", str(config), "-a", "-q"])

    sync()
    counts = {name: len(maildir_messages(mail / name)) for name in FOLDERS}
    assert counts == FOLDERS
    check_round_trip(filled, mail / "INBOX", sync)


def test_offlineimap_round_trip(imap_port, filled, tmp_path):
    offlineimap = require_program("offlineimap")
    mail = tmp_path / "mail"
    config = tmp_path / "offlineimaprc"
    config.write_text(f"""
[general]
accounts = test
metadata = {tmp_path}/meta

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {mail}
sep = /

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {imap_port}
remoteuser = {filled.address}
remotepass = {PASSWORD}
ssl = no
starttls = no
maxconnections = 1
""")

    def sync() -> None:
        run([offlineimap, "-c", str(config), "-o", "-u", "quiet"])

    sync()
    counts = {name: len(maildir_messages(mail / name)) for name in FOLDERS}
    assert counts == FOLDERS
    check_round_trip(filled, mail / "INBOX", sync)
