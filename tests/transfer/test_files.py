"""exportmail to mbox and Maildir and importmail back, through the real
commands and database: what lands in the other mailbox is what was exported,
flags, keywords and internal dates included; a second run adds nothing; a
quota stops an import cleanly."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.antispam.corpus import message_from_file_bytes
from apps.directory.models import Mailbox
from apps.store import filed
from apps.store import services as store
from apps.store.models import Flag, Message
from tests.conftest import CORPORA
from tests.factories import make_mailbox

# Real mail (tests/corpus): a body line "From Hello Support …" that an
# unquoted mbox would split at, and ">>From" lines that mboxo would garble.
SAMPLES = ["mime/flanker__complaints__yahoo.eml",
           "ham/easy_ham.00074.71045f0bdb236b814e4729d318bd6509",
           "ham/easy_ham.00001.7c53336b37003a9286aba55d2945844c",
           "mime/rubymail__attachment_emails__attachment_message_rfc822.eml",
           "ham/easy_ham.00002.9c4069e25e1ef370c078db7ee85ff9ac"]
# (folder, flags, keywords) of each sample, in order.
PLACES = [("INBOX", Flag.SEEN, ["$Label1"]), ("INBOX", 0, []),
          ("Archive/2023", Flag.SEEN | Flag.ANSWERED | Flag.FLAGGED, ["work", "$Forwarded"]),
          ("Lists/python.org", Flag.DRAFT | Flag.DELETED, []),
          ("Lists/python.org", Flag.SEEN, ["work"])]


def corpus_message(name: str) -> bytes:
    return message_from_file_bytes((CORPORA / name).read_bytes())


@pytest.fixture
def alice(db) -> Mailbox:
    mailbox = make_mailbox("alice@transfer.example")
    for name in {place[0] for place in PLACES} - {"INBOX"}:
        store.create_folder(mailbox, name)
    for index, (sample, (folder, flags, keywords)) in enumerate(
            zip(SAMPLES, PLACES, strict=True)):
        store.append(mailbox, folder, corpus_message(sample), flags=flags, keywords=keywords,
                     internal_date=datetime(2023, 1 + index, 2, 3, 4, 5, tzinfo=UTC))
    return mailbox


def contents(mailbox: Mailbox) -> dict[str, list[tuple]]:
    """Every folder's messages as a user sees them: bytes, flags, date."""
    found: dict[str, list[tuple]] = {}
    for message in Message.objects.filter(folder__mailbox=mailbox).select_related(
            "folder").order_by("folder__name", "uid"):
        found.setdefault(message.folder.name, []).append(
            (filed.read_message(message), message.flags, sorted(message.keywords),
             message.internal_date))
    return found


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, "--no-progress", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_mbox_round_trip(alice, tmp_path: Path):
    total = sum(m.size for m in Message.objects.filter(folder__mailbox=alice))
    assert run("exportmail", alice.address, "--mbox", str(tmp_path / "out")) == (
        f"exported 5 messages ({total} bytes)\n")
    files = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*.mbox"))
    assert files == ["Archive.mbox", "Archive/2023.mbox", "Drafts.mbox", "INBOX.mbox",
                     "Junk.mbox", "Lists.mbox", "Lists/python.org.mbox", "Sent.mbox",
                     "Trash.mbox"]
    inbox = (tmp_path / "out" / "INBOX.mbox").read_bytes()
    assert inbox.startswith(b"From MAILER-DAEMON Mon Jan  2 03:04:05 2023\n")
    assert b"\nFrom MAILER-DAEMON Thu Feb  2 03:04:05 2023\n" in inbox
    assert b"\n>From Hello Support Tue Jul 10" in inbox  # mboxrd quoting
    assert b"\n>>>From Doom9" in inbox
    assert b"\nStatus: RO\nX-Keywords: $Label1\n\n" in inbox
    assert b"\r" not in inbox

    bob = make_mailbox("bob@transfer.example")
    assert run("importmail", bob.address, "--mbox", str(tmp_path / "out")) == (
        f"imported 5 messages ({total} bytes); 0 were there already\n")
    assert contents(bob) == contents(alice)
    assert run("importmail", bob.address, "--mbox", str(tmp_path / "out")) == (
        "imported 0 messages (0 bytes); 5 were there already\n")
    assert contents(bob) == contents(alice)


def test_maildir_round_trip(alice, tmp_path: Path):
    target = tmp_path / "Maildir"
    assert run("exportmail", alice.address, "--maildir", str(target)).startswith(
        "exported 5 messages")
    subfolder = target / ".Lists.python&AC4-org" / "cur"
    names = sorted(p.name for p in subfolder.iterdir())
    assert [name.rpartition(":2,")[2] for name in names] == ["DT", "Sa"]
    assert (target / ".Lists.python&AC4-org" / "dovecot-keywords").read_text() == "0 work\n"
    assert os.stat(subfolder / names[0]).st_mtime == datetime(
        2023, 4, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == [
        ".Archive", ".Archive.2023", ".Drafts", ".Junk", ".Lists", ".Lists.python&AC4-org",
        ".Sent", ".Trash"]

    bob = make_mailbox("bob@transfer.example")
    assert run("importmail", bob.address, "--maildir", str(target)).startswith(
        "imported 5 messages")
    assert contents(bob) == contents(alice)
    assert run("importmail", bob.address, "--maildir", str(target)).startswith(
        "imported 0 messages")
    assert contents(bob) == contents(alice)


def test_export_refuses_a_directory_in_use(alice, tmp_path: Path):
    (tmp_path / "used" / "x").mkdir(parents=True)
    with pytest.raises(CommandError, match="exists and is not an empty directory"):
        run("exportmail", alice.address, "--maildir", str(tmp_path / "used"))


def test_an_mbox_from_elsewhere_into_a_named_folder(db, tmp_path: Path):
    # mutt's mboxo: flags in Status/X-Status, a From_ line with a zone, no
    # trailing empty line at the end of the file.
    path = tmp_path / "saved"
    path.write_bytes(
        b"From joe@example.com Tue Mar  7 09:10:11 2017\nSubject: one\nStatus: RO\n"
        b"X-Status: F\n\n>From here\n>>From there\n\n"
        b"From joe@example.com Wed Mar  8 09:10:11 2017 +0100\nSubject: two\n\nbye\n")
    carol = make_mailbox("carol@transfer.example")
    run("importmail", carol.address, "--mbox", str(path), "--folder", "Old/Saved",
        "--mbox-variant", "mboxo")
    assert contents(carol) == {"Old/Saved": [
        (b"Subject: one\r\n\r\nFrom here\r\n>>From there\r\n", Flag.SEEN | Flag.FLAGGED, [],
         datetime(2017, 3, 7, 9, 10, 11, tzinfo=UTC)),
        (b"Subject: two\r\n\r\nbye\r\n", 0, [], datetime(2017, 3, 8, 9, 10, 11, tzinfo=UTC)),
    ]}


def test_import_stops_at_the_quota_and_finishes_when_there_is_room(alice, tmp_path: Path):
    run("exportmail", alice.address, "--mbox", str(tmp_path / "out"))
    sizes = [message.size for message in Message.objects.filter(folder__mailbox=alice)]
    dave = make_mailbox("dave@transfer.example", quota=sum(sizes) - min(sizes) - 1)
    with pytest.raises(CommandError, match=r"stopped: mailbox over quota: "
                                           r"dave@transfer\.example; run the import again"):
        run("importmail", dave.address, "--mbox", str(tmp_path / "out"), "--batch", "2")
    used, quota = store.quota_usage(dave)
    assert 0 < used <= quota
    partial = contents(dave)
    assert 0 < sum(len(v) for v in partial.values()) < 5

    Mailbox.objects.filter(pk=dave.pk).update(quota=0)
    run("importmail", dave.address, "--mbox", str(tmp_path / "out"))
    assert contents(dave) == contents(alice)
