"""POP3's use of the store: the maildrop lock, the login snapshot, message
bytes, and the removals of the UPDATE state. Sync functions (one transaction
or one query each) with async twins for the listener."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from apps.directory.audit import Actor, record
from apps.directory.models import Mailbox
from apps.pop3.maildrop import Entry, Maildrop
from apps.pop3.models import HiddenMessage, MailboxOptions, MaildropLock, WireSize
from apps.pop3.protocol import to_crlf, top, wire_size
from apps.store import filed, health
from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.store.models import Folder, Heartbeat, Message
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import MailhostError

log = logging.getLogger(__name__)


class LockLost(MailhostError):
    """The maildrop lock expired and another session holds the mailbox now."""

    code = "lock_lost"
    user_fault = False


# --- the maildrop lock ---------------------------------------------------------


def _zombie(pid: int) -> bool:
    """Linux: whether ``pid`` has exited and is only waiting to be reaped
    (proc(5): the state after the command name in /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].startswith(b"Z")


def _owner_gone(lock: MaildropLock, now: datetime) -> bool:
    """Whether the listener process that holds ``lock`` has died: on this host
    its pid is gone; on any host, its heartbeat has gone stale."""
    if not lock.pid:
        return False
    if lock.host == socket.gethostname():
        try:
            os.kill(lock.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
        if _zombie(lock.pid):
            # A killed listener child whose parent died too waits to be reaped
            # by init (never, under an init that does not reap): dead all the same.
            return True
    return Heartbeat.objects.filter(
        kind="listeners", host=lock.host, pid=lock.pid,
        seen__lt=now - health.stale_after("listeners")).exists()


def acquire_lock(mailbox_id: int, token: str, *, seconds: int) -> bool:
    """Take the mailbox for one session; False when another live session has it."""
    now = timezone.now()
    with transaction.atomic():
        MaildropLock.objects.filter(mailbox_id=mailbox_id, expires__lt=now).delete()
        held = MaildropLock.objects.filter(mailbox_id=mailbox_id).first()
        if held is not None and _owner_gone(held, now):
            # A listener SIGKILLed with the session open: the mailbox is free
            # now, not only once the lock's lifetime has run out.
            MaildropLock.objects.filter(mailbox_id=mailbox_id, token=held.token).delete()
        try:
            with transaction.atomic():
                MaildropLock.objects.create(
                    mailbox_id=mailbox_id, token=token, expires=now + timedelta(seconds=seconds),
                    host=socket.gethostname(), pid=os.getpid())
        except IntegrityError:
            return False
    return True


def renew_lock(mailbox_id: int, token: str, *, seconds: int) -> bool:
    return bool(MaildropLock.objects.filter(mailbox_id=mailbox_id, token=token).update(
        expires=timezone.now() + timedelta(seconds=seconds)))


def release_lock(mailbox_id: int, token: str) -> None:
    MaildropLock.objects.filter(mailbox_id=mailbox_id, token=token).delete()


# --- the snapshot ----------------------------------------------------------------


def set_leave_copy(mailbox: Mailbox, leave_copy: bool, *, actor: Actor | None = None) -> None:
    """Switch "leave a copy on the server" for a mailbox's POP3 sessions."""
    with transaction.atomic():
        options, _ = MailboxOptions.objects.get_or_create(mailbox=mailbox)
        if options.leave_copy != leave_copy:
            options.leave_copy = leave_copy
            options.save(update_fields=["leave_copy"])
            record(actor, "update", "mailbox", mailbox.address, domain_name=mailbox.domain.name,
                   changes={"pop3_leave_copy": [not leave_copy, leave_copy]})


def open_maildrop(mailbox: Mailbox) -> Maildrop:
    """The INBOX as it is now: its messages in UID order from one query, with
    their wire sizes, less those hidden by "leave a copy"; blobs seen by POP3
    for the first time are measured once."""
    folder = store.get_folder(mailbox, "INBOX")
    known = WireSize.objects.filter(sha256=OuterRef("blob_id")).values("size")[:1]
    hidden = HiddenMessage.objects.filter(folder_id=OuterRef("folder_id"), uid=OuterRef("uid"))
    rows = list(Message.objects.filter(folder=folder).exclude(Exists(hidden)).order_by("uid")
                .values_list("uid", "blob_id", "added_headers", "added_at", Subquery(known)))
    unmeasured = {blob_id for _, blob_id, _, _, size in rows if size is None}
    measured: dict[str, int] = {}
    if unmeasured:
        blobs = get_blob_store()
        shas = sorted(unmeasured)
        datas = blobs.read_concurrently([partial(blobs.read, sha) for sha in shas])
        measured = {sha: wire_size(data) for sha, data in zip(shas, datas, strict=True)}
        WireSize.objects.bulk_create(
            [WireSize(sha256=sha, size=size) for sha, size in measured.items()],
            ignore_conflicts=True)
    # A message is its blob with added header fields (CRLF-ended lines) put
    # in at a line's start (apps/store/filed.py): its wire size is theirs
    # plus the blob's.
    entries = [Entry(uid, wire_size(bytes(added))
                     + (size if size is not None else measured[blob_id]),
                     blob_id, bytes(added), added_at)
               for uid, blob_id, added, added_at, size in rows]
    leave_copy = MailboxOptions.objects.filter(mailbox=mailbox, leave_copy=True).exists()
    return Maildrop(folder.pk, folder.uidvalidity, entries, leave_copy=leave_copy)


def forget_collected(blob_ids: Sequence[str]) -> None:
    """After a garbage collection: drop the wire sizes of the blobs removed,
    and the hidden marks of messages no longer in their folder (expunged
    over IMAP or the webmail after POP3 hid them)."""
    for start in range(0, len(blob_ids), 1000):
        WireSize.objects.filter(sha256__in=blob_ids[start:start + 1000]).delete()
    present = Message.objects.filter(folder_id=OuterRef("folder_id"), uid=OuterRef("uid"))
    HiddenMessage.objects.exclude(Exists(present)).delete()


def read_message(entry: Entry) -> bytes:
    return filed.message_bytes(entry.blob_id, entry.added_headers, entry.added_at)


# TOP reads this much of a message first, and twice as much again each time
# that was not enough.
TOP_FIRST_READ = 16 * 1024


def read_top(entry: Entry, lines: int) -> bytes:
    """RFC 1939 §7 TOP, with CRLF line ends, from ranged reads of the message's
    start: a client that lists a maildrop with TOP n 0 does not read (from
    S3: fetch) whole messages."""
    length = TOP_FIRST_READ
    while True:
        data = filed.message_prefix(entry.blob_id, entry.added_headers, entry.added_at, length)
        # to_crlf ends a last line cut by the read: a TOP that takes all the
        # bytes read may need more of them, a shorter one is whole.
        crlf = to_crlf(data)
        found = top(crlf, lines)
        if len(data) < length or len(found) < len(crlf):
            return found
        length *= 2


# --- UPDATE state ----------------------------------------------------------------


def remove_deleted(
    mailbox_id: int, token: str, folder_id: int, uids: Sequence[int], *, leave_copy: bool = False,
) -> list[int]:
    """RFC 1939 §6: remove the messages marked deleted, through the store (which
    leaves tombstones and tells IMAP sessions), only while this session still
    holds the mailbox. With ``leave_copy`` they are only hidden from POP3."""
    with transaction.atomic():
        # The lock row stays locked until commit, so it cannot expire and be taken
        # over between this check and the removal.
        held = MaildropLock.objects.select_for_update().filter(
            mailbox_id=mailbox_id, token=token)
        if not list(held):
            raise LockLost()
        if leave_copy:
            HiddenMessage.objects.bulk_create(
                [HiddenMessage(folder_id=folder_id, uid=uid) for uid in uids],
                ignore_conflicts=True)
            return sorted(uids)
        return store.remove(Folder.objects.get(pk=folder_id), uids)


aacquire_lock = database_sync_to_async(acquire_lock)
arenew_lock = database_sync_to_async(renew_lock)
arelease_lock = database_sync_to_async(release_lock)
aopen_maildrop = database_sync_to_async(open_maildrop)
aremove_deleted = database_sync_to_async(remove_deleted)


# A small blob is read on the event loop: from the page cache that takes
# microseconds, less than handing it to a worker thread and back (which
# bench/pop3.py showed to cost a third of RETR throughput). Larger ones go to
# a thread, so that a cold disk cannot hold up the other sessions for long.
INLINE_READ_MAX = 64 * 1024


async def aread_message(entry: Entry) -> bytes:
    return await _read(entry, read_message, entry)


async def aread_top(entry: Entry, lines: int) -> bytes:
    return await _read(entry, read_top, entry, lines)


async def _read(entry: Entry, reader: Callable[..., bytes], *args: object) -> bytes:
    # With the S3 store only a cached blob is read inline: a GET would hold
    # up every session of the loop.
    if entry.size <= INLINE_READ_MAX and get_blob_store().held_locally(entry.blob_id):
        return reader(*args)
    return await asyncio.to_thread(reader, *args)
