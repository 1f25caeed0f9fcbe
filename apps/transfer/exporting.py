"""Export a hosted mailbox to mbox files or a Maildir tree, with flags,
keywords and internal dates (apps/transfer/formats.py has both layouts), in a
form ``importmail``, mutt, Thunderbird and Dovecot read back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from apps.directory.models import Mailbox
from apps.store import filed
from apps.store import services as store
from apps.store.models import Folder, Message
from apps.transfer import formats
from apps.transfer.importing import Progress, ProgressCallback
from mailhost.errors import Conflict

# Messages read per query (their bytes are held until written).
READ_BATCH = 500
_FIELDS = ("uid", "blob_id", "flags", "keywords", "internal_date", *filed.FIELDS)


def _start(mailbox: Mailbox, target: Path) -> tuple[list[Folder], Progress]:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"{target} exists and is not an empty directory")
    target.mkdir(parents=True, exist_ok=True)
    folders = store.list_folders(mailbox)
    return folders, Progress(messages_total=sum(f.message_count for f in folders),
                             bytes_total=sum(f.total_size for f in folders))


def _rows(folder: Folder) -> Iterator[list[dict]]:
    """The folder's messages in UID order, a batch at a time, with their bytes."""
    after = 0
    while True:
        rows = list(Message.objects.filter(folder=folder, uid__gt=after).order_by("uid")
                    .values(*_FIELDS)[:READ_BATCH])
        if not rows:
            return
        filed.as_filed(rows)
        filed.read_bytes(rows)
        yield rows
        after = rows[-1]["uid"]


def _counted(state: Progress, row: dict, report: ProgressCallback) -> None:
    state.messages_done += 1
    state.copied += 1
    state.bytes_done += len(row["raw"])
    state.bytes_copied += len(row["raw"])
    report(state)


def export_mbox(mailbox: Mailbox, target: Path, *,
                progress: ProgressCallback | None = None) -> Progress:
    """One mboxrd file per folder under ``target``: ``INBOX.mbox``,
    ``Archive/2023.mbox``; flags in Status/X-Status, keywords in X-Keywords."""
    folders, state = _start(mailbox, target)
    report = progress or (lambda _state: None)
    for folder in folders:
        path = target / f"{folder.name}.mbox"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for rows in _rows(folder):
                for row in rows:
                    data = formats.with_flag_fields(row["raw"], row["flags"], row["keywords"])
                    out.write(formats.mbox_entry(data, row["internal_date"]))
                    _counted(state, row, report)
            out.flush()
            os.fsync(out.fileno())
    return state


def export_maildir(mailbox: Mailbox, target: Path, *,
                   progress: ProgressCallback | None = None) -> Progress:
    """A Maildir++ tree at ``target``: INBOX at the root, ``.Archive.2023`` for
    Archive/2023; flags in the ``:2,`` info, keywords through each folder's
    dovecot-keywords (the first 26 of a folder: Dovecot's limit), the internal
    date as the file's mtime."""
    folders, state = _start(mailbox, target)
    report = progress or (lambda _state: None)
    for folder in folders:
        directory = target / formats.maildir_from_folder(folder.name)
        for sub in ("cur", "new", "tmp"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        keywords: list[str] = []
        for rows in _rows(folder):
            for row in rows:
                letters = ""
                for name in row["keywords"]:
                    if name not in keywords and len(keywords) < len(formats.KEYWORD_LETTERS):
                        keywords.append(name)
                    if name in keywords:
                        letters += formats.KEYWORD_LETTERS[keywords.index(name)]
                when = row["internal_date"].timestamp()
                base = f"{int(when)}.M{row['uid']}V{folder.uidvalidity}.mailhost"
                # Written in tmp/, then moved into cur/ (the Maildir protocol).
                temporary = directory / "tmp" / base
                temporary.write_bytes(row["raw"].replace(b"\r\n", b"\n"))
                os.utime(temporary, (when, when))
                temporary.rename(directory / "cur" /
                                 (base + formats.maildir_info(row["flags"], letters)))
                _counted(state, row, report)
        if keywords:
            (directory / formats.KEYWORDS_FILE).write_text(formats.keywords_file(keywords))
    return state
