"""Import mail into a hosted mailbox: from a remote IMAP account, an mbox file
(or a folder of them) or a Maildir tree.

Every message is filed through ``store.deliver_batch``, the function IMAP
APPEND files with, a few hundred per transaction and round of fsyncs, into the
folder of the same name (special-use folders onto ours: the source's \\Sent is
our Sent), with its flags, keywords and internal date.

Running an import again copies nothing twice, as imapsync does: each remote
IMAP message filed (or found there) is recorded by (source, folder,
UIDVALIDITY, UID) and is not even fetched the next time; and every message is
matched by its bytes against the target folder before it is filed (the store
names a message by its sha256), which covers mbox and Maildir sources and a
remote folder whose UIDVALIDITY changed. An import that reaches the mailbox's
quota stops there, keeping what it filed, and says so.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from django.db import transaction
from imapclient import IMAPClient
from imapclient import exceptions as imap_errors

from apps.directory.models import Mailbox
from apps.store import mime
from apps.store import services as store
from apps.store.blobs import digest
from apps.store.models import Folder, Message, SpecialUse
from apps.transfer import formats
from apps.transfer.models import ImportedMessage
from mailhost.errors import MailhostError, NotFound, OverQuota

log = logging.getLogger(__name__)

# A batch is filed in one transaction; the fetch of a remote batch is one command.
BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class Progress:
    """How far an import or export is; the last one is its result."""

    messages_total: int = 0
    bytes_total: int = 0
    messages_done: int = 0
    bytes_done: int = 0
    copied: int = 0  # filed (import) or written (export)
    bytes_copied: int = 0
    skipped: int = 0  # there already (import)
    stopped: str = ""  # why it stopped before the end (over quota)
    folder: str = ""  # the source folder being read
    problems: list[str] = field(default_factory=list)


ProgressCallback = Callable[[Progress], None]


@dataclass
class SourceFolder:
    name: str  # as the source names it: remote folder, file or directory
    target: str  # our folder name
    special_use: str = ""
    uidvalidity: int = 0  # 0: the source has no UIDs (files)
    messages: int = 0
    size: int = 0  # bytes; 0 when the source cannot tell before reading


@dataclass
class SourceMessage:
    data: bytes  # CRLF line ends
    flags: int = 0
    keywords: Sequence[str] = ()
    internal_date: datetime | None = None
    uid: int = 0


class Source(Protocol):
    label: str

    def folders(self) -> list[SourceFolder]: ...

    def messages(self, folder: SourceFolder, known_uids: set[int]
                 ) -> Iterator[SourceMessage]: ...


# --- the import ----------------------------------------------------------------------------


def import_mail(mailbox: Mailbox, source: Source, *, batch: int = BATCH_MESSAGES,
                progress: ProgressCallback | None = None) -> Progress:
    """Copy every folder of ``source`` into ``mailbox``; what is there already
    is skipped. Returns the final progress (``stopped`` says why it ended early)."""
    folders = source.folders()
    state = Progress(messages_total=sum(f.messages for f in folders),
                     bytes_total=sum(f.size for f in folders))
    report = progress or (lambda _state: None)
    report(state)
    by_use = {f.special_use: f.name for f in store.list_folders(mailbox) if f.special_use}
    done_before = 0
    for folder in folders:
        state.folder = folder.name
        report(state)
        folder.target = by_use.get(folder.special_use, folder.target)
        try:
            target = _target_folder(mailbox, folder.target)
        except MailhostError as error:
            state.problems.append(f"{folder.name}: {error.message}")
            done_before += folder.messages
            continue
        known = _known_uids(mailbox, source.label, folder)
        pending: list[SourceMessage] = []
        pending_bytes = 0
        for message in source.messages(folder, known):
            pending.append(message)
            pending_bytes += len(message.data)
            if len(pending) >= batch or pending_bytes >= BATCH_BYTES:
                _file_batch(mailbox, target, source.label, folder, pending, state)
                pending, pending_bytes = [], 0
                report(state)
                if state.stopped:
                    return state
        if pending:
            _file_batch(mailbox, target, source.label, folder, pending, state)
            if state.stopped:
                report(state)
                return state
        # Messages the source left out (recorded before) count as skipped.
        done_before += folder.messages
        state.skipped += max(0, done_before - state.messages_done)
        state.messages_done = max(done_before, state.messages_done)
        report(state)
    return state


def _target_folder(mailbox: Mailbox, name: str) -> Folder:
    try:
        return store.get_folder(mailbox, store.validate_folder_name(name))
    except NotFound:
        return store.create_folder(mailbox, name)


def _known_uids(mailbox: Mailbox, label: str, folder: SourceFolder) -> set[int]:
    if not folder.uidvalidity:
        return set()
    return set(ImportedMessage.objects.filter(
        mailbox=mailbox, source=label, folder=folder.name, uidvalidity=folder.uidvalidity,
    ).values_list("uid", flat=True))


def _file_batch(mailbox: Mailbox, target: Folder, label: str, folder: SourceFolder,
                messages: list[SourceMessage], state: Progress) -> None:
    """File a batch in one transaction, leaving out messages whose bytes the
    folder holds already, and record the remote ones."""
    messages = [m for m in messages if m.data]
    shas = [digest(m.data) for m in messages]
    # Only what may be new is written and parsed, before the folder is locked
    # (SQLite's BEGIN IMMEDIATE holds the whole database); bytes that no row
    # comes to reference are collected.
    candidates = _not_in_folder(target, shas, range(len(messages)))
    requests = {i: store.DeliveryRequest(
        [mailbox.pk], messages[i].data, folder=target.name, flags=messages[i].flags,
        keywords=messages[i].keywords, internal_date=messages[i].internal_date,
        fallback_to_inbox=False) for i in candidates}
    store.prepare_deliveries(list(requests.values()))
    with transaction.atomic():
        store.lock_folders(target.pk)
        new = _not_in_folder(target, shas, candidates)  # another import may have run
        results = store.deliver_batch([requests[i] for i in new])
        filed = {i for i, result in zip(new, results, strict=True) if result is None}
        there = [i for i in range(len(messages)) if i in filed or i not in new]
        if folder.uidvalidity:
            ImportedMessage.objects.bulk_create([
                ImportedMessage(mailbox=mailbox, source=label, folder=folder.name,
                                uidvalidity=folder.uidvalidity, uid=messages[i].uid)
                for i in there], ignore_conflicts=True)
    for index in there:
        size = len(messages[index].data)
        state.messages_done += 1
        state.bytes_done += size
        if index in filed:
            state.copied += 1
            state.bytes_copied += size
        else:
            state.skipped += 1
    refused = [r for r in results if isinstance(r, OverQuota)]
    if refused:
        state.stopped = f"{refused[0].message}; run the import again once there is room"
    elif len(filed) < len(new):
        # Not a quota refusal: the folder went away under the import.
        raise next(r for r in results if r is not None)


def _not_in_folder(target: Folder, shas: list[str], indexes: Iterable[int]) -> list[int]:
    """Of ``indexes`` into ``shas``, those whose bytes the folder lacks (the
    first of equal ones)."""
    chosen = list(indexes)
    present = set(Message.objects.filter(folder=target, blob_id__in={shas[i] for i in chosen})
                  .values_list("blob_id", flat=True))
    new = []
    for index in chosen:
        if shas[index] not in present:
            present.add(shas[index])
            new.append(index)
    return new


# --- sources -------------------------------------------------------------------------------


# The remote's TLS modes and their usual ports.
IMAP_PORTS = {"ssl": 993, "starttls": 143, "none": 143}


class SourceUnavailable(MailhostError):
    """The remote IMAP account cannot be read."""

    code = "source_unavailable"


def imap_label(host: str, port: int, user: str) -> str:
    return f"imap://{user}@{host}:{port}"


def _reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not valid ({error.verify_message})"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class ImapSource:
    """A remote IMAP account, read-only (EXAMINE, BODY.PEEK: the source's
    \\Seen flags stay as they are). SourceUnavailable, saying which, when
    the host cannot be reached, TLS fails or the login is refused."""

    def __init__(self, host: str, port: int, user: str, password: str, *, tls: str = "ssl",
                 verify_certificate: bool = True, timeout: float = 120) -> None:
        self.label = imap_label(host, port, user)
        context = ssl.create_default_context()
        if not verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            self.client = IMAPClient(host, port=port, ssl=tls == "ssl", ssl_context=context,
                                     timeout=timeout)
        except ssl.SSLError as error:
            raise SourceUnavailable(f"TLS with {host}:{port} failed: {_reason(error)}") from None
        except OSError as error:
            raise SourceUnavailable(f"cannot connect to {host}:{port}: {_reason(error)}"
                                    ) from None
        try:
            if tls == "starttls":
                self.client.starttls(context)
            self.client.normalise_times = False  # internal dates with their zone
            self.client.login(user, password)
        except ssl.SSLError as error:
            self.client.shutdown()
            raise SourceUnavailable(f"TLS with {host}:{port} failed: {_reason(error)}") from None
        except imap_errors.LoginError:
            self.client.shutdown()
            raise SourceUnavailable(f"{host}:{port} refused the login of {user} (wrong user "
                                    "name or password?)") from None
        except (OSError, imap_errors.IMAPClientError) as error:
            self.client.shutdown()
            raise SourceUnavailable(f"{host}:{port} failed: {_reason(error)}") from None

    def close(self) -> None:
        try:
            self.client.logout()
        except (OSError, imap_errors.IMAPClientError):
            self.client.shutdown()

    def folders(self) -> list[SourceFolder]:
        folders = []
        for flags, delimiter, name in self.client.list_folders():
            attributes = {f.decode().lower() for f in flags}
            if {"\\noselect", "\\nonexistent"} & attributes:
                continue
            status = self.client.folder_status(name, ["MESSAGES", "UIDVALIDITY"])
            separator = delimiter.decode() if delimiter else ""
            target = ("INBOX" if name.upper() == "INBOX" else
                      name.replace(separator, "/") if separator else name)
            # RFC 6154 §2: the source's special-use attribute finds our folder.
            special = next((use for use in SpecialUse.values
                            if use and use.lower() in attributes), "")
            folders.append(SourceFolder(name, target, special, status[b"UIDVALIDITY"],
                                        status[b"MESSAGES"]))
        return folders

    def messages(self, folder: SourceFolder, known_uids: set[int]) -> Iterator[SourceMessage]:
        selected = self.client.select_folder(folder.name, readonly=True)
        if selected[b"UIDVALIDITY"] != folder.uidvalidity:
            folder.uidvalidity, known_uids = selected[b"UIDVALIDITY"], set()
        if not selected[b"EXISTS"]:
            return
        todo = sorted(set(self.client.search("ALL")) - known_uids)
        # Sizes first, so that one FETCH of bodies stays within BATCH_BYTES;
        # a few hundred UIDs per command keep its line short (IMAPClient lists
        # them one by one).
        sizes: dict[int, int] = {}
        for start in range(0, len(todo), 500):
            fetched = self.client.fetch(todo[start:start + 500], ["RFC822.SIZE"])
            sizes.update((uid, item.get(b"RFC822.SIZE", 0)) for uid, item in fetched.items())
        chunk: list[int] = []
        chunk_bytes = 0
        for position, uid in enumerate(todo):
            chunk.append(uid)
            chunk_bytes += sizes.get(uid, 0)
            if (len(chunk) >= BATCH_MESSAGES or chunk_bytes >= BATCH_BYTES
                    or position == len(todo) - 1):
                yield from self._fetch(chunk)
                chunk, chunk_bytes = [], 0

    def _fetch(self, uids: list[int]) -> Iterator[SourceMessage]:
        fetched = self.client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        for uid in uids:
            item = fetched.get(uid)
            if item is None:
                continue  # expunged meanwhile
            bits, keywords = formats.flag_bits(f.decode("utf-8", "replace")
                                               for f in item[b"FLAGS"])
            yield SourceMessage(item[b"BODY[]"], bits, keywords, item[b"INTERNALDATE"], uid)


class MboxSource:
    """An mbox file into one folder, or a folder of ``*.mbox`` files (as
    ``exportmail --mbox`` writes them: ``Archive/2023.mbox`` is Archive/2023)."""

    def __init__(self, path: Path, *, folder: str = "INBOX", variant: str = "mboxrd") -> None:
        self.path, self.folder, self.variant = path, folder, variant
        self.label = f"mbox:{path}"

    def folders(self) -> list[SourceFolder]:
        if not self.path.is_dir():
            files = [(self.path, self.folder)]
        else:
            files = [(p, p.relative_to(self.path).with_suffix("").as_posix())
                     for p in sorted(self.path.rglob("*.mbox")) if p.is_file()]
        folders = []
        for path, target in files:
            with path.open("rb") as stream:
                count = sum(1 for _ in formats.split_mbox(stream, variant=self.variant))
            folders.append(SourceFolder(str(path), target, messages=count,
                                        size=path.stat().st_size))
        return folders

    def messages(self, folder: SourceFolder, known_uids: set[int]) -> Iterator[SourceMessage]:
        with open(folder.name, "rb") as stream:
            for entry in formats.split_mbox(stream, variant=self.variant):
                data, bits, keywords = formats.take_flag_fields(mime.with_crlf(entry.data))
                yield SourceMessage(data, bits, keywords, entry.date)


class MaildirSource:
    """A Maildir tree: the root is INBOX, Maildir++ ``.A.B`` directories are A/B."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = f"maildir:{path}"

    def folders(self) -> list[SourceFolder]:
        directories = [self.path] if (self.path / "cur").is_dir() else []
        directories += sorted(p for p in self.path.iterdir()
                              if p.name.startswith(".") and p.name not in (".", "..")
                              and (p / "cur").is_dir())
        folders = []
        for directory in directories:
            files = self._files(directory)
            name = "" if directory == self.path else directory.name
            folders.append(SourceFolder(str(directory), formats.folder_from_maildir(name),
                                        messages=len(files),
                                        size=sum(p.stat().st_size for p in files)))
        return folders

    @staticmethod
    def _files(directory: Path) -> list[Path]:
        # Delivery order, as near as files tell it: by mtime, then name.
        files = [p for sub in ("new", "cur") for p in (directory / sub).iterdir()
                 if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def messages(self, folder: SourceFolder, known_uids: set[int]) -> Iterator[SourceMessage]:
        directory = Path(folder.name)
        keywords_path = directory / formats.KEYWORDS_FILE
        keywords = (formats.read_keywords_file(keywords_path.read_text(errors="replace"))
                    if keywords_path.exists() else [])
        for path in self._files(directory):
            bits, names = formats.maildir_info_flags(path.name, keywords)
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            yield SourceMessage(mime.with_crlf(path.read_bytes()), bits, names, when)
