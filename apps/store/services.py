"""Store services: every write to folders and messages goes through here.

Each service is one transaction. UIDs and MODSEQs are allocated with the
folder row locked (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite every
transaction is ``BEGIN IMMEDIATE``, so writers are serialised), which keeps
them unique and increasing with any number of writer processes. Blobs are
durable on disk before the transaction that references them commits, and
change events go out after it has committed.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db import connection, models, transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import Exact
from django.utils import timezone

from apps.directory.models import Domain, Mailbox
from apps.store import events, filed, hooks, mime, textindex, trace
from apps.store.blobs import BlobStore, get_blob_store
from apps.store.models import (
    DEFAULT_FOLDERS,
    Blob,
    BlobText,
    Expunged,
    Flag,
    Folder,
    Message,
    SpecialUse,
    Subscription,
    TraceEvent,
    TraceKind,
)
from mailhost import metrics
from mailhost.compiled import CompiledInsert, CompiledQuery
from mailhost.errors import Conflict, Invalid, NotFound, OverQuota

log = logging.getLogger(__name__)


# --- folders ----------------------------------------------------------------------


def new_uidvalidity() -> int:
    # RFC 3501 §2.3.1.1: must change if UIDs are reused; time-based keeps it
    # increasing across delete/re-create, the random part avoids collisions.
    return (int(time.time()) << 8 | random.randrange(256)) & 0xFFFFFFFF or 1


def ensure_default_folders(mailbox_ids: Iterable[int]) -> None:
    """Create INBOX and the special-use folders for mailboxes that have none."""
    ids = set(mailbox_ids)
    have = set(Folder.objects.filter(mailbox_id__in=ids, name="INBOX").values_list(
        "mailbox_id", flat=True))
    missing = ids - have
    if not missing:
        return
    Folder.objects.bulk_create(
        [
            Folder(mailbox_id=mailbox_id, name=name, special_use=use,
                   uidvalidity=new_uidvalidity())
            for mailbox_id in sorted(missing)
            for name, use in DEFAULT_FOLDERS
        ],
        ignore_conflicts=True,
    )
    # The default folders start subscribed, so that clients showing only
    # subscribed folders show them.
    Subscription.objects.bulk_create(
        [Subscription(mailbox_id=mailbox_id, name=name)
         for mailbox_id in sorted(missing) for name, _ in DEFAULT_FOLDERS],
        ignore_conflicts=True,
    )


def junk_folders(mailbox_ids: Iterable[int], *, recreate: Iterable[int] = ()) -> dict[int, str]:
    """RFC 6154: the name of each mailbox's folder marked \\Junk. Mailboxes of
    ``recreate`` that have none get one back ("Junk", or their folder of that
    name marked): mail that must not reach INBOX needs somewhere else to go."""
    ids = set(mailbox_ids)
    names = dict(Folder.objects.filter(
        mailbox_id__in=ids, special_use=SpecialUse.JUNK).values_list("mailbox_id", "name"))
    for mailbox_id in sorted(set(recreate) - set(names)):
        ensure_default_folders([mailbox_id])
        folder, _ = Folder.objects.get_or_create(
            mailbox_id=mailbox_id, name="Junk",
            defaults={"special_use": SpecialUse.JUNK, "uidvalidity": new_uidvalidity()})
        if not folder.special_use:
            Folder.objects.filter(pk=folder.pk).update(special_use=SpecialUse.JUNK)
        names[mailbox_id] = folder.name
    return names


def list_folders(mailbox: Mailbox) -> list[Folder]:
    rows = _FOLDERS_OF.rows(mailbox.pk)
    if not any(row[_FOLDER_NAME_INDEX] == "INBOX" for row in rows):
        # A mailbox that never received mail has no default folders yet.
        ensure_default_folders([mailbox.pk])
        rows = _FOLDERS_OF.rows(mailbox.pk)
    return [Folder.from_db(connection.alias, _FOLDER_FIELDS, row) for row in rows]


def get_folder(mailbox: Mailbox, name: str) -> Folder:
    """A folder by name; ``INBOX`` is case-insensitive (RFC 3501 §5.1)."""
    if name.upper() == "INBOX":
        name = "INBOX"
    row = _FOLDER_NAMED.first(mailbox.pk, name)
    if row is None:
        # A mailbox that never received mail has no default folders yet.
        ensure_default_folders([mailbox.pk])
        row = _FOLDER_NAMED.first(mailbox.pk, name)
    if row is None:
        raise NotFound(f"no folder named {name}")
    return Folder.from_db(connection.alias, _FOLDER_FIELDS, row)


def _fields(model: type[models.Model], names: set[str]) -> list[str]:
    """Some of a model's columns, in its order (as ``Model.from_db`` takes them)."""
    return [f.attname for f in model._meta.concrete_fields if f.attname in names]


# Every column (a session reads the folder on each SELECT, STATUS and APPEND).
_FOLDER_FIELDS = [f.attname for f in Folder._meta.concrete_fields]
_FOLDER_NAMED = CompiledQuery(
    lambda mailbox_id, name: Folder.objects.filter(mailbox_id=mailbox_id, name=name)
    .order_by().values_list(*_FOLDER_FIELDS)[:1], int, str)
# Every LIST, LSUB and STATUS of a session reads them all.
_FOLDERS_OF = CompiledQuery(lambda mailbox_id: Folder.objects.filter(mailbox_id=mailbox_id)
                            .order_by("name").values_list(*_FOLDER_FIELDS), int)
_FOLDER_NAME_INDEX = _FOLDER_FIELDS.index("name")


MAX_FOLDER_NAME = 1000
MAX_FOLDER_LEVEL = 255
MAX_FOLDER_DEPTH = 32


def validate_folder_name(name: str) -> str:
    """The canonical form of a folder name, or Invalid.

    Folders are rows scoped by mailbox, so no name can reach another user's
    data; the checks keep names sane for every client and for Maildir-style
    exports: no empty levels (leading, trailing or doubled "/"), no "." or
    ".." levels, no control characters, bounded length and depth. A first
    level spelled like INBOX in any case is INBOX (RFC 3501 §5.1)."""
    if not name:
        raise Invalid("empty folder name")
    if len(name) > MAX_FOLDER_NAME:
        raise Invalid("folder name too long")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        raise Invalid("control character in folder name")
    levels = name.split(Folder.DELIMITER)
    if len(levels) > MAX_FOLDER_DEPTH:
        raise Invalid("folder hierarchy too deep")
    for level in levels:
        if not level:
            raise Invalid("empty level in folder name")
        if level in (".", ".."):
            raise Invalid(f'"{level}" is not allowed as a folder name')
        if len(level) > MAX_FOLDER_LEVEL:
            raise Invalid("folder name level too long")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return Folder.DELIMITER.join(levels)


def _parents(name: str) -> list[str]:
    levels = name.split(Folder.DELIMITER)
    return [Folder.DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def create_folder(mailbox: Mailbox, name: str, *, special_use: str = "",
                  subscribed: bool = True) -> Folder:
    """RFC 3501 §6.3.3 CREATE, with the superior levels created as needed;
    ``subscribed`` subscribes them all (IMAP's CREATE leaves that to SUBSCRIBE)."""
    name = validate_folder_name(name)
    if special_use and special_use not in SpecialUse.values:
        raise Invalid(f"unknown special use {special_use}")
    ensure_default_folders([mailbox.pk])
    with transaction.atomic():
        if Folder.objects.filter(mailbox=mailbox, name=name).exists():
            raise Conflict(f"folder {name} exists already")
        for parent in _parents(name):
            Folder.objects.get_or_create(
                mailbox=mailbox, name=parent, defaults={"uidvalidity": new_uidvalidity()})
        if subscribed:
            Subscription.objects.bulk_create(
                [Subscription(mailbox=mailbox, name=n) for n in [*_parents(name), name]],
                ignore_conflicts=True)
        return Folder.objects.create(mailbox=mailbox, name=name, special_use=special_use,
                                     uidvalidity=new_uidvalidity())


def delete_folder(mailbox: Mailbox, name: str) -> None:
    """RFC 3501 §6.3.4 DELETE: the folder and its messages; its subfolders stay."""
    folder = get_folder(mailbox, validate_folder_name(name))
    if folder.name == "INBOX":
        raise Invalid("INBOX cannot be deleted")
    with transaction.atomic():
        locked = lock_folders(folder.pk)[folder.pk]
        # Tombstones and messages go with the row (cascade); blobs stay for the
        # garbage collector. Sessions that have it selected are told by the event.
        locked.highestmodseq += 1
        event = [events.FolderChanged(locked.mailbox_id, locked.pk, locked.highestmodseq)]
        locked.delete()
        transaction.on_commit(lambda: events.publish(event))


def rename_folder(mailbox: Mailbox, old: str, new: str) -> None:
    """RFC 3501 §6.3.5 RENAME, subfolders included. Renaming INBOX moves its
    messages into a new folder of the new name and leaves INBOX empty."""
    source = get_folder(mailbox, validate_folder_name(old))
    new = validate_folder_name(new)
    if new == source.name:
        raise Conflict(f"folder {new} exists already")
    if new.startswith(source.name + Folder.DELIMITER):
        raise Invalid("a folder cannot be moved into itself")
    if source.name == "INBOX":
        target = create_folder(mailbox, new)
        uids = list(Message.objects.filter(folder=source).values_list("uid", flat=True))
        if uids:
            move(source, uids, target)
        return
    with transaction.atomic():
        prefix = source.name + Folder.DELIMITER
        family = list(Folder.objects.select_for_update().filter(
            models.Q(pk=source.pk) | models.Q(mailbox=mailbox, name__startswith=prefix)))
        renamed = {f.pk: new + f.name[len(source.name):] for f in family}
        if new == "INBOX" or Folder.objects.filter(
                mailbox=mailbox, name__in=list(renamed.values())).exists():
            raise Conflict(f"folder {new} exists already")
        for folder in family:
            folder.name = renamed[folder.pk]
            # RFC 3501 §2.3.1.1: a client that knew the old contents under the
            # new name must not take them for the same mailbox.
            folder.uidvalidity = new_uidvalidity()
        Folder.objects.bulk_update(family, ["name", "uidvalidity"])
        for parent in _parents(new):
            Folder.objects.get_or_create(
                mailbox=mailbox, name=parent, defaults={"uidvalidity": new_uidvalidity()})
        _rename_subscriptions(mailbox, source.name, new)


def _rename_subscriptions(mailbox: Mailbox, old: str, new: str) -> None:
    """The subscriptions of a renamed tree follow it, as Dovecot does: a client
    that subscribed a folder keeps seeing it under its new name, and the old
    names do not linger as subscriptions of nothing (RFC 3501 §6.3.5 leaves
    this to the server)."""
    prefix = old + Folder.DELIMITER
    moved = list(Subscription.objects.filter(
        models.Q(name=old) | models.Q(name__startswith=prefix), mailbox=mailbox))
    if not moved:
        return
    Subscription.objects.filter(pk__in=[s.pk for s in moved]).delete()
    Subscription.objects.bulk_create(
        [Subscription(mailbox=mailbox, name=new + s.name[len(old):]) for s in moved],
        ignore_conflicts=True)


def subscribe(mailbox: Mailbox, name: str) -> None:
    """RFC 3501 §6.3.6 SUBSCRIBE of an existing folder."""
    folder = get_folder(mailbox, validate_folder_name(name))
    Subscription.objects.get_or_create(mailbox=mailbox, name=folder.name)


def unsubscribe(mailbox: Mailbox, name: str) -> None:
    """RFC 3501 §6.3.7 UNSUBSCRIBE: works on names whose folder is gone (a
    deleted folder stays subscribed until then); NotFound when not subscribed."""
    name = validate_folder_name(name)
    deleted, _ = Subscription.objects.filter(mailbox=mailbox, name=name).delete()
    if not deleted:
        raise NotFound(f"{name} is not subscribed")


def subscribed_names(mailbox: Mailbox) -> set[str]:
    """The mailbox's subscription list, whether or not each folder exists."""
    ensure_default_folders([mailbox.pk])
    return set(Subscription.objects.filter(mailbox=mailbox).values_list("name", flat=True))


def claim_recent(folder: Folder, *, head: tuple[int, int] | None = None) -> tuple[int, int]:
    """RFC 3501 §2.3.2: \\Recent goes to exactly one session. Returns the
    (low, high) UID range, high excluded, that is recent for the caller.
    ``head``: the folder's ``recent_uid`` and UIDNEXT as the caller has just
    read them (``get_folder``), not read again."""
    # Nothing new since the last claim (the usual SELECT): an empty range with
    # no write, so that the SELECT does not queue behind writers. A message
    # arriving after this read is recent for the next claimant.
    if head is None:
        head = _RECENT_HEAD.first(folder.pk)
        if head is None:
            return 0, 0
    if head[0] >= head[1]:
        return head[1], head[1]
    # No savepoint of its own (two statements fewer): nothing in it is caught, and
    # batching.run_calls gives each call of a batch its own.
    with transaction.atomic(savepoint=False):
        locked = lock_folders(folder.pk).get(folder.pk)
        if locked is None:
            return 0, 0
        low, high = locked.recent_uid, locked.uidnext
        if high > low:
            locked.recent_uid = high
            _update_rows(Folder, [locked], ["recent_uid"])
        return low, high


_RECENT_HEAD = CompiledQuery(lambda folder_id: Folder.objects.filter(pk=folder_id).order_by()
                             .values_list("recent_uid", "uidnext")[:1], int)


# --- reading for protocol sessions --------------------------------------------------


def folder_status(folder: Folder, items: Sequence[str]) -> dict[str, int]:
    """STATUS data items (RFC 3501 §6.3.10, RFC 7162 HIGHESTMODSEQ, RFC 8438
    SIZE, RFC 9051 DELETED) from the folder row, counting only when asked."""
    counted = tuple(item for item in items if item in _COUNTED)
    query = _STATUS_OF_ONE.get(counted)
    if query is None:  # one per combination of counted items, of which there are 8
        query = _STATUS_OF_ONE[counted] = CompiledQuery(
            lambda folder_id: _status_rows(Folder.objects.filter(pk=folder_id), counted), int)
    row = query.first(folder.pk)
    if row is None:
        raise Folder.DoesNotExist(f"folder {folder.pk}")
    return _status_values(row, counted, items)


# The STATUS items counted over a folder's messages, as a condition on them.
_COUNTED = {
    "UNSEEN": lambda: Exact(F("messages__flags").bitand(Flag.SEEN), 0),
    "DELETED": lambda: Exact(F("messages__flags").bitand(Flag.DELETED), Flag.DELETED),
    "RECENT": lambda: Q(messages__uid__gte=F("recent_uid")),
}
_STATUS_OF_ONE: dict[tuple[str, ...], CompiledQuery] = {}


def _status_rows(folders: QuerySet[Folder], counted: Sequence[str]) -> QuerySet[Folder]:
    """Rows of (pk, MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ, SIZE, the
    counted items…)."""
    return (folders.order_by()
            .annotate(**{item.lower(): Count("messages", filter=_COUNTED[item]())
                         for item in counted})
            .values_list("pk", "message_count", "uidnext", "uidvalidity", "highestmodseq",
                         "total_size", *(item.lower() for item in counted)))


def _status_values(row: Sequence[int], counted: Sequence[str],
                   items: Sequence[str]) -> dict[str, int]:
    _pk, messages, uidnext, uidvalidity, highestmodseq, size, *counts = row
    values = {"MESSAGES": messages, "UIDNEXT": uidnext, "UIDVALIDITY": uidvalidity,
              "HIGHESTMODSEQ": highestmodseq, "SIZE": size, **dict(zip(counted, counts,
                                                                        strict=True))}
    return {item: values[item] for item in items}


def folders_status(folder_ids: Iterable[int], items: Sequence[str],
                   ) -> dict[int, dict[str, int]]:
    """``folder_status`` of many folders in one query, by folder id (LIST-STATUS,
    RFC 5819, asks it of every folder listed); folders that are gone are left out."""
    counted = [item for item in items if item in _COUNTED]
    rows = _status_rows(Folder.objects.filter(pk__in=list(folder_ids)), counted)
    return {row[0]: _status_values(row, counted, items) for row in rows}


@dataclass(frozen=True)
class FolderChanges:
    """What changed in a folder since a MODSEQ: rows (uid, flags, keywords,
    modseq) of messages added or changed, and UIDs expunged."""

    highestmodseq: int
    uidnext: int
    changed: list[tuple[int, int, list[str], int]]
    expunged: list[int]


def folder_changes(folder_id: int, since: int, *,
                   head: tuple[int, int] | None = None) -> FolderChanges | None:
    """Changes since ``since`` (0: every message), in UID order; None if the
    folder is gone. HIGHESTMODSEQ is read first, so a change committed while
    the rows are read is seen now or next time, never lost. ``head``: the
    folder's HIGHESTMODSEQ and UIDNEXT as the caller has just read them
    (``get_folder``), not read again.

    No transaction: each row is read whole by one statement (flags, keywords
    and MODSEQ agree), and a change committed between the statements is read
    again next time. On SQLite a transaction here would be BEGIN IMMEDIATE and
    every view refresh would queue behind the writers."""
    if head is None:
        head = _FOLDER_HEAD.first(folder_id)
        if head is None:
            return None
    if since and head[0] == since:
        return FolderChanges(head[0], head[1], [], [])  # nothing happened
    if since == 0:  # every message, and no tombstone is news
        rows = [(*row, False) for row in _CHANGED_SINCE.rows(folder_id, since)]
    else:
        rows = _CHANGED_OR_EXPUNGED_SINCE.rows(folder_id, since)
    changed = [(uid, flags, [] if words in _NO_KEYWORDS else json.loads(words), modseq)
               for uid, flags, words, modseq, gone in rows if not gone]
    expunged = [uid for uid, _flags, _words, _modseq, gone in rows if gone]
    return FolderChanges(head[0], head[1], changed, expunged)


_NO_KEYWORDS = ("[]", None)
_FOLDER_HEAD = CompiledQuery(lambda folder_id: Folder.objects.filter(pk=folder_id).order_by()
                             .values_list("highestmodseq", "uidnext")[:1], int)
_CHANGED_SINCE = CompiledQuery(
    lambda folder_id, since: Message.objects.filter(folder_id=folder_id, modseq__gt=since)
    .order_by("uid")
    # Most messages have no keywords: decoding an empty JSON list per row
    # would cost more than the rest of a large SELECT, so the column comes
    # as text and only the others are decoded.
    .annotate(keywords_json=Cast("keywords", models.TextField()))
    .values_list("uid", "flags", "keywords_json", "modseq"), int, int)
# The changed messages and the tombstones in one statement (one round trip of
# each view refresh fewer), the tombstones marked by their last column.
_CHANGED_OR_EXPUNGED_SINCE = CompiledQuery(
    lambda folder_id, since: Message.objects.filter(folder_id=folder_id, modseq__gt=since)
    .order_by()
    .annotate(keywords_json=Cast("keywords", models.TextField()), gone=Value(False))
    .values_list("uid", "flags", "keywords_json", "modseq", "gone")
    .union(Expunged.objects.filter(folder_id=folder_id, modseq__gt=since).order_by()
           .annotate(flags=Value(0, models.PositiveSmallIntegerField()),
                     keywords_json=Value(None, models.TextField()), gone=Value(True))
           .values_list("uid", "flags", "keywords_json", "modseq", "gone"), all=True)
    .order_by("uid"), int, int)
_EXPUNGED_SINCE = CompiledQuery(
    lambda folder_id, since, above: Expunged.objects.filter(
        folder_id=folder_id, modseq__gt=since, uid__gt=above).order_by("uid")
    .values_list("uid"), int, int, int)


def expunged_since(folder_id: int, since: int, *, above: int = 0) -> list[int]:
    """UIDs expunged after MODSEQ ``since`` (RFC 7162 §3.2.5.2 VANISHED);
    only those above UID ``above`` if given."""
    return [uid for (uid,) in _EXPUNGED_SINCE.rows(folder_id, since, above)]


def highest_modseqs(folder_ids: Iterable[int]) -> dict[int, int]:
    """HIGHESTMODSEQ of many folders in one query (the IDLE poller's tick)."""
    return dict(Folder.objects.filter(pk__in=list(folder_ids))
                .values_list("pk", "highestmodseq"))


def folder_rows(folder_id: int, fields: Sequence[str]) -> tuple[FolderChanges, list[dict]]:
    """Every message of a folder at once, for a reader with no session view
    (the webmail's search): its state as ``folder_changes(folder_id, 0)``
    gives it, and the selected fields of each row, in UID order, read in the
    same query."""
    with transaction.atomic():
        head = Folder.objects.filter(pk=folder_id).values_list(
            "highestmodseq", "uidnext").first()
        if head is None:
            return FolderChanges(0, 0, [], []), []
        query = Message.objects.filter(folder_id=folder_id)
        keywords = dict(query.exclude(keywords=[]).values_list("uid", "keywords"))
        rows = list(query.order_by("uid").values("uid", "flags", "modseq", *_as_filed(fields)))
    if _reads_message(fields):
        filed.as_filed(rows)
    changed = [(r["uid"], r["flags"], keywords.get(r["uid"], []), r["modseq"]) for r in rows]
    return FolderChanges(head[0], head[1], changed, []), rows


def message_rows(folder_id: int, uids: Sequence[int], fields: Sequence[str]) -> list[dict]:
    """Selected fields of messages (Message fields, or ``blob__*``), one query.
    Rows that read the message (``blob_id``, ``blob__bodystructure``) come
    with ``filed.FIELDS`` and the structure as filed (apps/store/filed.py);
    ``filed.read_bytes(rows)`` then gives their bytes."""
    names = ("uid", *_as_filed(fields))
    query = _MESSAGE_ROWS.get(names)
    if query is None:
        query = _MESSAGE_ROWS[names] = CompiledQuery(
            lambda folder_id, uids: Message.objects.filter(folder_id=folder_id, uid__in=uids)
            .order_by("uid").values_list(*names), int, [int])
    rows = [dict(zip(names, row, strict=True)) for row in query.rows(folder_id, uids)]
    if _reads_message(fields):
        filed.as_filed(rows)
    return rows


# By the fields read: FETCHes ask for few combinations.
_MESSAGE_ROWS: dict[tuple[str, ...], CompiledQuery] = {}


def _reads_message(fields: Sequence[str]) -> bool:
    return "blob_id" in fields or "blob__bodystructure" in fields


def _as_filed(fields: Sequence[str]) -> list[str]:
    """``fields``, and what ``filed.as_filed`` needs when the rows read the message."""
    if _reads_message(fields):
        return list(dict.fromkeys([*fields, *filed.FIELDS]))
    return list(fields)


# --- quotas -----------------------------------------------------------------------


def _usage(mailbox_ids: Iterable[int]) -> dict[int, int]:
    usage: dict[int, int] = defaultdict(int)
    for mailbox_id, used in _USAGE.rows(list(mailbox_ids)):
        usage[mailbox_id] = int(used or 0)  # PostgreSQL sums to numeric
    return usage


# Every delivery and APPEND asks, in its transaction.
_USAGE = CompiledQuery(
    lambda mailbox_ids: Folder.objects.filter(mailbox_id__in=mailbox_ids).order_by()
    .values("mailbox_id").annotate(used=Sum("total_size")).values_list("mailbox_id", "used"),
    [int])


def usage_expression(mailbox_lookup: str) -> Coalesce:
    """Bytes used, as an expression to annotate a whole queryset in its one
    query (a list page of mailboxes or domains). ``mailbox_lookup`` leads from a
    folder to the outer row: ``"mailbox"`` for Mailbox, ``"mailbox__domain"``
    for Domain."""
    used = (Folder.objects.filter(**{mailbox_lookup: OuterRef("pk")}).order_by()
            .values(mailbox_lookup).annotate(used=Sum("total_size")).values("used"))
    return Coalesce(Subquery(used), 0, output_field=models.BigIntegerField())


@dataclass(frozen=True)
class StorageSummary:
    used: int  # bytes, in every folder of the mailboxes
    quota: int  # bytes, the sum of the limited mailboxes' quotas
    mailboxes: int
    unlimited: int  # mailboxes without a quota


def storage_summary(mailboxes: models.QuerySet[Mailbox]) -> StorageSummary:
    """Storage used by ``mailboxes`` against their quotas, from the folders'
    kept totals (two queries, no message scan)."""
    used = Folder.objects.filter(mailbox__in=mailboxes).aggregate(
        used=Coalesce(Sum("total_size"), 0))["used"]
    quotas = mailboxes.aggregate(
        total=Coalesce(Sum("quota"), 0), count=models.Count("pk"),
        unlimited=models.Count("pk", filter=models.Q(quota=0)))
    return StorageSummary(used=used, quota=quotas["total"], mailboxes=quotas["count"],
                          unlimited=quotas["unlimited"])


def with_domain_usage(domains: QuerySet[Domain]) -> QuerySet[Domain]:
    """Domains annotated with ``mailbox_count`` and ``used_bytes``, both in the
    list page's one query (the API's domain list and the admin panel's)."""
    mailbox_count = (Mailbox.objects.filter(domain=OuterRef("pk")).order_by()
                     .values("domain").annotate(n=Count("pk")).values("n"))
    return domains.annotate(mailbox_count=Coalesce(Subquery(mailbox_count), 0),
                            used_bytes=usage_expression("mailbox__domain"))


def quota_usage(mailbox: Mailbox) -> tuple[int, int]:
    """(bytes used, quota in bytes; 0 means unlimited)."""
    return _usage([mailbox.pk])[mailbox.pk], mailbox.quota


def _over_quota(mailbox: Mailbox, used: int, adding: int) -> bool:
    return mailbox.quota > 0 and used + adding > mailbox.quota


# --- delivery and append -----------------------------------------------------------


@dataclass
class DeliveryRequest:
    """One message for one or more local mailboxes.

    ``folder`` falls back to INBOX for a mailbox that lacks it when
    ``fallback_to_inbox`` is set (delivery); APPEND wants NotFound instead."""

    mailbox_ids: Sequence[int]
    data: bytes
    folder: str = "INBOX"
    flags: int = 0
    keywords: Sequence[str] = ()
    internal_date: datetime | None = None
    fallback_to_inbox: bool = True
    # Off when the message was acknowledged before (a spooled message being
    # filed): it must land even if the mailbox filled up meanwhile.
    check_quota: bool = True
    # The message trace: with a queue id, each filing is recorded (and
    # ``trace_events``, e.g. the SMTP acceptance) in the batch's transaction.
    queue_id: str = ""
    trace_events: list[TraceEvent] = field(default_factory=list)
    # When its 250 went out, for the filing latency metric, if not the time
    # of an acceptance in ``trace_events`` (a spooled message's).
    accepted_at: datetime | None = None
    # Header fields inserted into ``data`` at ``added_at`` in the message as
    # filed (the checks' verdicts), kept in the message row: ``data`` stays
    # one blob. ``added_at`` is ``mime.after_first_field(data)``.
    added_headers: bytes = b""
    added_at: int = 0
    # The sha256 of ``data`` when it is durable in the store already and
    # referenced by a row that this batch's transaction replaces (a spooled
    # message): no second write, no second round of fsyncs.
    stored_as: str = ""
    # The full-text index row is written after the commit, by a task
    # (``textindex.index_after_commit``), not in the delivery's transaction:
    # the filing of inbound mail, where the index insert was the largest part
    # of the write transaction. Searches read a message not indexed yet.
    index_later: bool = False
    # ``mime.analyze(data)`` when the caller made it already (the checks'
    # rules read it): the blob row is filled from it, not parsed again.
    analysis: mime.MessageInfo | None = field(default=None, repr=False)
    messages: list[Message] = field(default_factory=list)
    # The blob's sha256, parsed row and index row (None: indexed later), once
    # ``prepare_deliveries`` has run.
    prepared: tuple[str, Blob, BlobText | None] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.added_headers) + len(self.data)


def _blob_row(sha: str, data: bytes, *, index: bool = True,
              info: mime.MessageInfo | None = None) -> tuple[Blob, BlobText | None]:
    """The parsed row of a blob (from ``info``, its analysis, if given) and its
    full-text index row (unless not ``index``)."""
    blob = _parsed_blob(sha, data, info)
    blob.text_indexed = index
    return blob, textindex.text_row(blob, data) if index else None


def _parsed_blob(sha: str, data: bytes, info: mime.MessageInfo | None = None) -> Blob:
    info = info or mime.analyze(data)
    # A NUL (raw in a binary or 8-bit header, or from an encoded-word) is
    # kept by SQLite and refused by PostgreSQL: U+FFFD in the cached fields,
    # as in the text index; the blob keeps the octets.
    fields = textindex.storable_value([
        info.envelope, info.bodystructure, info.subject, info.from_text, info.to_text,
        info.cc_text, info.bcc_text, info.message_id, info.in_reply_to, info.references])
    (envelope, bodystructure, subject, from_text, to_text, cc_text, bcc_text, message_id,
     in_reply_to, references) = fields  # type: ignore[misc]
    return Blob(
        sha256=sha, size=len(data), envelope=envelope, bodystructure=bodystructure,
        subject=subject, from_text=from_text, to_text=to_text, cc_text=cc_text,
        bcc_text=bcc_text, message_id=message_id, in_reply_to=in_reply_to,
        references=references, sent_date=info.date,
    )


# What ``_blob_row`` parses; an unparsed row (``write_blobs``) has it still empty.
_PARSED_FIELDS = ["envelope", "bodystructure", "subject", "from_text", "to_text", "cc_text",
                  "bcc_text", "message_id", "in_reply_to", "references", "sent_date"]


def _create_blob_rows(rows: Sequence[tuple[Blob, BlobText | None]]) -> None:
    """Blob rows and their index rows (those not left for later), one insert
    each; a blob stored before keeps its rows, and gets them parsed if it was
    stored unparsed. Call it in the transaction that references the blobs."""
    Blob.objects.bulk_create([blob for blob, _text in rows], ignore_conflicts=True)
    unparsed = {pk for (pk,) in _UNPARSED.rows([blob.pk for blob, _text in rows])}
    if unparsed:
        _save_parsed([blob for blob, _text in rows if blob.pk in unparsed])
    textindex.index_rows(text for _blob, text in rows if text is not None)


_UNPARSED = CompiledQuery(lambda shas: Blob.objects.filter(pk__in=shas, bodystructure={})
                          .order_by().values_list("pk"), [str])


def _save_parsed(blobs: Sequence[Blob]) -> None:
    """The parsed fields of stored blob rows: every filed message does this
    for its spooled blob."""
    _update_rows(Blob, blobs, _PARSED_FIELDS)


def _update_rows(model: type[models.Model], rows: Sequence[models.Model],
                 names: Sequence[str]) -> None:
    """Save fields of model instances by primary key, one UPDATE statement
    run for each row: Django's bulk_update (a CASE per field and row) cost more
    than the rest of a filing transaction, and most of a STORE's."""
    fields = [model._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    sql = (f"UPDATE {quote(model._meta.db_table)} SET {assignments} "  # noqa: S608
           f"WHERE {quote(model._meta.pk.column)} = %s")
    with connection.cursor() as cursor:
        cursor.executemany(sql, [
            [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
            + [row.pk] for row in rows])


def _next_modseq(folder: Folder, bumped: set[int]) -> int:
    """One new MODSEQ per folder per transaction."""
    if folder.pk not in bumped:
        folder.highestmodseq += 1
        bumped.add(folder.pk)
    return folder.highestmodseq


def _save_counters(folders: Iterable[Folder], added: dict[int, tuple[int, int]]) -> None:
    for folder in folders:
        count, size = added.get(folder.pk, (0, 0))
        Folder.objects.filter(pk=folder.pk).update(
            uidnext=folder.uidnext, highestmodseq=folder.highestmodseq,
            message_count=F("message_count") + count, total_size=F("total_size") + size,
        )


def _publish_on_commit(folders: Iterable[Folder]) -> None:
    changed = [events.FolderChanged(f.mailbox_id, f.pk, f.highestmodseq) for f in folders]
    transaction.on_commit(lambda: events.publish(changed))


def deliver_batch(requests: Sequence[DeliveryRequest]) -> list[OverQuota | NotFound | None]:
    """Store several messages in one transaction and one round of fsyncs.

    Returns one entry per request: None when stored (its ``messages`` filled
    in), or the error that refused it. A request is all-or-nothing across its
    mailboxes, because SMTP gives one answer per DATA."""
    prepare_deliveries(requests)
    shas: list[str] = []
    blob_rows: dict[str, tuple[Blob, BlobText | None]] = {}
    for request in requests:
        assert request.prepared is not None
        sha, blob, text = request.prepared
        shas.append(sha)
        blob_rows[sha] = (blob, text)
    results: list[OverQuota | NotFound | None] = [None] * len(requests)

    with transaction.atomic():
        all_ids = {mid for r in requests for mid in r.mailbox_ids}
        names = {r.folder for r in requests} | {"INBOX"}
        locked = _lock_targets(all_ids, names)
        if any((mid, "INBOX") not in locked for mid in all_ids):
            ensure_default_folders(all_ids)
            locked = _lock_targets(all_ids, names)
        mailboxes = {row[0]: Mailbox.from_db(connection.alias, _QUOTA_FIELDS, row)
                     for row in _QUOTAS.rows(list(all_ids))}
        usage = _usage(all_ids)

        targets: list[tuple[int, list[Folder]]] = []
        for index, request in enumerate(requests):
            folders = []
            for mid in request.mailbox_ids:
                folder = locked.get((mid, request.folder))
                if folder is None and request.fallback_to_inbox:
                    folder = locked.get((mid, "INBOX"))
                if folder is None:
                    results[index] = NotFound(f"no folder named {request.folder}")
                    break
                folders.append(folder)
            if results[index] is not None:
                continue
            size = request.size
            full = [mailboxes[m].address for m in request.mailbox_ids
                    if request.check_quota and _over_quota(mailboxes[m], usage[m], size)]
            if full:
                results[index] = OverQuota(f"mailbox over quota: {', '.join(full)}")
                continue
            for mid in request.mailbox_ids:
                usage[mid] += size
            targets.append((index, folders))

        stored = {shas[i]: blob_rows[shas[i]] for i, _ in targets}
        _create_blob_rows(list(stored.values()))
        textindex.index_after_commit([sha for sha, (_, text) in stored.items() if text is None])
        bumped: set[int] = set()
        added: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))
        new_messages: list[Message] = []
        trace_rows: list[TraceEvent] = []
        now = timezone.now()
        for index, folders in targets:
            request = requests[index]
            for folder in folders:
                message = Message(
                    folder_id=folder.pk, uid=folder.uidnext,
                    modseq=_next_modseq(folder, bumped), blob_id=shas[index],
                    added_headers=request.added_headers, added_at=request.added_at,
                    size=request.size, internal_date=request.internal_date or now,
                    flags=request.flags, keywords=list(request.keywords),
                )
                folder.uidnext += 1
                count, size = added[folder.pk]
                added[folder.pk] = (count + 1, size + message.size)
                request.messages.append(message)
                new_messages.append(message)
            if request.queue_id:
                trace_rows += request.trace_events
                trace_rows += [trace.event(
                    TraceKind.FILED, request.queue_id,
                    addresses=[mailboxes[f.mailbox_id].address],
                    mailbox=mailboxes[f.mailbox_id].address, folder=f.name, uid=m.uid,
                    junk=f.special_use == SpecialUse.JUNK)
                    for f, m in zip(folders, request.messages, strict=True)]
        Message.objects.bulk_create(new_messages)
        trace.record(trace_rows)
        latencies = [(_folder_kind(folders[0]), (now - accepted).total_seconds())
                     for index, folders in targets
                     if (accepted := _accepted_at(requests[index])) is not None]
        if latencies:
            transaction.on_commit(partial(metrics.observe, metrics.FILING_LATENCY, latencies))
        touched = [f for f in locked.values() if f.pk in bumped]
        _save_counters(touched, added)
        _publish_on_commit(touched)
    return results


def _lock_targets(mailbox_ids: Iterable[int], names: Iterable[str]) -> dict[tuple[int, str],
                                                                          Folder]:
    """The folders named in the mailboxes, locked, by (mailbox id, name)."""
    folders = [Folder.from_db(connection.alias, _FOLDER_FIELDS, row)
               for row in _TARGETS.rows(sorted(mailbox_ids), sorted(names))]
    return {(folder.mailbox_id, folder.name): folder for folder in folders}


# Locked in primary-key order so that concurrent batches cannot deadlock.
_TARGETS = CompiledQuery(
    lambda mailbox_ids, names: Folder.objects.select_for_update()
    .filter(mailbox_id__in=mailbox_ids, name__in=names).order_by("pk")
    .values_list(*_FOLDER_FIELDS), [int], [str])
_QUOTA_FIELDS = _fields(Mailbox, {"id", "address", "quota"})
_QUOTAS = CompiledQuery(lambda mailbox_ids: Mailbox.objects.filter(pk__in=mailbox_ids)
                        .order_by().values_list(*_QUOTA_FIELDS), [int])


def _accepted_at(request: DeliveryRequest) -> datetime | None:
    """When mail being delivered was accepted (None: not mail, e.g. APPEND)."""
    if request.accepted_at is not None or not request.queue_id:
        return request.accepted_at
    return next((e.time for e in request.trace_events
                 if e.kind in (TraceKind.RECEIVED, TraceKind.SUBMITTED)), None)


def _folder_kind(folder: Folder) -> str:
    if folder.special_use == SpecialUse.JUNK:
        return "junk"
    return "inbox" if folder.name == "INBOX" else "other"


def prepare_deliveries(requests: Sequence[DeliveryRequest]) -> None:
    """Write the requests' bytes durably (one round of fsyncs; none for a
    ``stored_as`` blob) and parse them, unless done before. A caller that
    wraps ``deliver_batch`` in a transaction of its own calls this first, so
    that no write lock is held (SQLite's BEGIN IMMEDIATE holds the whole
    database) while messages are parsed and fsynced. Bytes that no commit
    comes to reference are collected after the grace period."""
    todo = [r for r in requests if r.prepared is None]
    to_write = [r for r in todo if not r.stored_as]
    written = iter(get_blob_store().put_many([r.data for r in to_write]) if to_write else [])
    parsed: dict[str, tuple[str, Blob, BlobText | None]] = {}
    for request in todo:
        sha = request.stored_as or next(written)
        if sha not in parsed:
            parsed[sha] = (sha, *_blob_row(sha, request.data, index=not request.index_later,
                                           info=request.analysis))
        request.prepared = parsed[sha]



def deliver(
    mailboxes: Sequence[Mailbox], data: bytes, *, folder: str = "INBOX",
    flags: int = 0, keywords: Sequence[str] = (), internal_date: datetime | None = None,
) -> list[Message]:
    """Deliver one message to local mailboxes (stored once on disk)."""
    request = DeliveryRequest([m.pk for m in mailboxes], data, folder=folder, flags=flags,
                              keywords=keywords, internal_date=internal_date)
    error = deliver_batch([request])[0]
    if error is not None:
        raise error
    return request.messages


def write_blobs(datas: Sequence[bytes], *, parse: bool = True) -> list[Blob]:
    """Write message bytes durably (one round of fsyncs) for a caller that keeps
    its own reference to them (the outbound queue, the spool), and parse them
    unless ``parse`` is False: their Blob rows, not saved yet. Call it before
    the transaction that saves them (``add_blob_rows``) with their reference,
    so that no database lock is held during the fsyncs; bytes left
    unreferenced by a failed transaction are collected after the grace period.

    Unparsed (the spool): the checks read the bytes, clients never see this
    copy unless it is delivered as it is, and delivering it parses it."""
    shas = get_blob_store().put_many(list(datas))
    rows: dict[str, Blob] = {}
    for sha, data in zip(shas, datas, strict=True):
        if sha not in rows:
            rows[sha] = _parsed_blob(sha, data) if parse else Blob(
                sha256=sha, size=len(data), envelope={}, bodystructure={})
    return [rows[sha] for sha in shas]


def add_blob_rows(blobs: Sequence[Blob]) -> None:
    """Save the rows of ``write_blobs`` (a blob stored before keeps its row).
    No full-text row: queued bytes are not searched, and a blob filed later
    gets its row then (the index treats a blob without one as unindexed)."""
    _insert_blobs.insert(list({b.sha256: b for b in blobs}.values()))


_insert_blobs = CompiledInsert(Blob, ignore_conflicts=True)


def append(
    mailbox: Mailbox, folder: str, data: bytes, *, flags: int = 0,
    keywords: Sequence[str] = (), internal_date: datetime | None = None,
) -> Message:
    """IMAP APPEND: into an existing folder only (NotFound means TRYCREATE)."""
    request = DeliveryRequest([mailbox.pk], data, folder=folder, flags=flags, keywords=keywords,
                              internal_date=internal_date, fallback_to_inbox=False)
    error = deliver_batch([request])[0]
    if error is not None:
        raise error
    return request.messages[0]


# --- copy, move, flags, expunge ----------------------------------------------------


def lock_folders(*folder_ids: int) -> dict[int, Folder]:
    """Lock folder rows for the rest of the transaction, in primary-key order
    (on SQLite the transaction's BEGIN IMMEDIATE has locked everything)."""
    if len(set(folder_ids)) == 1:  # every write of a session: one compiled read
        row = _FOLDER_LOCKED.first(folder_ids[0])
        if row is None:
            return {}
        folder = Folder.from_db(connection.alias, _FOLDER_FIELDS, row)
        return {folder.pk: folder}
    return {f.pk: f for f in Folder.objects.select_for_update()
            .filter(pk__in=set(folder_ids)).order_by("pk")}


_FOLDER_LOCKED = CompiledQuery(
    lambda folder_id: Folder.objects.select_for_update().filter(pk=folder_id).order_by()
    .values_list(*_FOLDER_FIELDS)[:1], int)


def _copy_locked(
    source: Folder, uids: Sequence[int], target: Folder, bumped: set[int], *,
    check_quota: bool = True, moved: bool = False,
) -> tuple[list[tuple[int, int]], int]:
    originals = list(Message.objects.filter(folder=source, uid__in=list(uids)).order_by("uid"))
    if originals:
        _notify_transfer_on_commit(source, target, [m.blob_id for m in originals], moved=moved)
    size = sum(m.size for m in originals)
    if check_quota:
        mailbox = Mailbox.objects.get(pk=target.mailbox_id)
        if _over_quota(mailbox, _usage([mailbox.pk])[mailbox.pk], size):
            raise OverQuota("mailbox over quota")
    copies = []
    mapping = []
    for original in originals:
        copies.append(Message(
            folder_id=target.pk, uid=target.uidnext, modseq=_next_modseq(target, bumped),
            blob_id=original.blob_id, added_headers=original.added_headers,
            added_at=original.added_at,
            size=original.size,
            internal_date=original.internal_date, flags=original.flags,
            keywords=list(original.keywords),
        ))
        mapping.append((original.uid, target.uidnext))
        target.uidnext += 1
    Message.objects.bulk_create(copies)
    return mapping, size


def _notify_transfer_on_commit(
    source: Folder, target: Folder, blob_ids: list[str], *, moved: bool,
) -> None:
    transfer = hooks.Transfer(
        mailbox_id=target.mailbox_id, source_folder_id=source.pk,
        source_special_use=source.special_use, target_folder_id=target.pk,
        target_special_use=target.special_use, blob_ids=tuple(blob_ids), moved=moved)
    transaction.on_commit(lambda: hooks.notify_transfer(transfer))


def copy(source: Folder, uids: Sequence[int], target: Folder) -> list[tuple[int, int]]:
    """Copy messages (no copy of the blob); returns (source uid, new uid) pairs."""
    with transaction.atomic():
        locked = lock_folders(source.pk, target.pk)
        src, dst = locked[source.pk], locked[target.pk]
        bumped: set[int] = set()
        mapping, size = _copy_locked(src, uids, dst, bumped)
        _save_counters([dst] if mapping else [], {dst.pk: (len(mapping), size)})
        _publish_on_commit([dst] if mapping else [])
    return mapping


def move(source: Folder, uids: Sequence[int], target: Folder) -> list[tuple[int, int]]:
    """RFC 6851 MOVE: copy and expunge from the source in one transaction."""
    with transaction.atomic():
        locked = lock_folders(source.pk, target.pk)
        src, dst = locked[source.pk], locked[target.pk]
        bumped: set[int] = set()
        # Moving within one mailbox does not change its usage.
        mapping, size = _copy_locked(src, uids, dst, bumped, moved=True,
                                     check_quota=src.mailbox_id != dst.mailbox_id)
        if not mapping:
            return []
        moved = [old for old, _ in mapping]
        _expunge_locked(src, moved, bumped)
        Folder.objects.filter(pk=dst.pk).update(
            uidnext=dst.uidnext, highestmodseq=dst.highestmodseq,
            message_count=F("message_count") + len(mapping), total_size=F("total_size") + size)
        _publish_on_commit([src, dst])
    return mapping


def _expunge_locked(folder: Folder, uids: Sequence[int], bumped: set[int],
                    size: int | None = None) -> None:
    """``size``: the messages' total size, if the caller has read it."""
    rows = Message.objects.filter(folder=folder, uid__in=list(uids))
    if size is None:
        size = rows.aggregate(total=Sum("size"))["total"] or 0
    modseq = _next_modseq(folder, bumped)
    Expunged.objects.bulk_create([Expunged(folder=folder, uid=u, modseq=modseq) for u in uids])
    count = rows.delete()[0]
    Folder.objects.filter(pk=folder.pk).update(
        highestmodseq=folder.highestmodseq,
        message_count=F("message_count") - count, total_size=F("total_size") - size)


def expunge(folder: Folder, uids: Sequence[int] | None = None) -> list[int]:
    """Remove messages flagged \\Deleted (only those in ``uids`` if given, as
    UID EXPUNGE of RFC 4315 §2.1); returns the expunged UIDs, ascending."""
    return expunge_at(folder, uids)[0]


def expunge_at(folder: Folder, uids: Sequence[int] | None = None) -> tuple[list[int], int]:
    """``expunge``, and the one new MODSEQ the expunge took (0 when nothing
    was expunged): a reader that had seen the folder up to that MODSEQ - 1
    has seen it all once it removes these UIDs."""
    def flagged_rows() -> list[tuple[int, int]]:
        """(UID, size) of the messages to expunge."""
        if uids is None:
            return _DELETED.rows(folder.pk)
        return _DELETED_AMONG.rows(folder.pk, uids)

    # Nothing flagged: done without the write lock (a flag set after this read
    # is as if set after the EXPUNGE).
    flagged = flagged_rows()
    if not flagged:
        return [], 0
    read_locked = _read_under_lock()
    # No savepoint of its own (two statements fewer): nothing in it is caught, and
    # batching.run_calls gives each call of a batch its own.
    with transaction.atomic(savepoint=False):
        locked = lock_folders(folder.pk)[folder.pk]
        if not read_locked:
            flagged = flagged_rows()
        gone = [uid for uid, _size in flagged]
        if not gone:
            return [], 0
        _expunge_locked(locked, gone, set(), size=sum(size for _uid, size in flagged))
        _publish_on_commit([locked])
    return gone, locked.highestmodseq


def _deleted(folder_id: int) -> QuerySet[Message]:
    return (Message.objects.filter(folder_id=folder_id)
            .annotate(deleted=F("flags").bitand(Flag.DELETED)).filter(deleted=Flag.DELETED)
            .order_by("uid"))


_DELETED = CompiledQuery(lambda folder_id: _deleted(folder_id).values_list("uid", "size"), int)
_DELETED_AMONG = CompiledQuery(lambda folder_id, uids: _deleted(folder_id).filter(uid__in=uids)
                               .values_list("uid", "size"), int, [int])


def _read_under_lock() -> bool:
    """Whether what this transaction has read so far was read under the lock
    its writes take: on SQLite every transaction begins IMMEDIATE, holding
    the database's one write lock from its first statement (row locks, on
    PostgreSQL, come with the folder row's SELECT … FOR UPDATE)."""
    return connection.in_atomic_block and not connection.features.has_select_for_update


def remove(folder: Folder, uids: Sequence[int]) -> list[int]:
    """Expunge the given messages whatever their flags (POP3 DELE at QUIT)."""
    with transaction.atomic():
        locked = lock_folders(folder.pk)[folder.pk]
        gone = sorted(Message.objects.filter(folder=locked, uid__in=list(uids))
                      .values_list("uid", flat=True))
        if gone:
            _expunge_locked(locked, gone, set())
            _publish_on_commit([locked])
    return gone


@dataclass(frozen=True)
class FlagChange:
    uid: int
    flags: int
    keywords: list[str]
    modseq: int


def set_flags(
    folder: Folder, uids: Sequence[int], *, mode: str, flags: int = 0,
    keywords: Sequence[str] = (), unchanged_since: int | None = None,
) -> tuple[list[FlagChange], list[int]]:
    """STORE: ``mode`` is "add", "remove" or "replace".

    Returns the messages whose flags changed and the UIDs refused because
    their MODSEQ is above ``unchanged_since`` (RFC 7162 §3.1.3, CONDSTORE's
    STORE (UNCHANGEDSINCE)). The changed messages share one new MODSEQ, the
    folder's HIGHESTMODSEQ + 1 (``_next_modseq``): a reader that had seen the
    folder up to that MODSEQ - 1 has seen it all, with these changes."""
    if mode not in ("add", "remove", "replace"):
        raise ValueError(mode)

    def new_state(message: Message) -> tuple[int, list[str]] | None:
        """The message's flags and keywords after the STORE; None if refused."""
        if unchanged_since is not None and message.modseq > unchanged_since:
            return None
        if mode == "add":
            return message.flags | flags, list(dict.fromkeys([*message.keywords, *keywords]))
        if mode == "remove":
            return (message.flags & ~flags,
                    [k for k in message.keywords if k not in set(keywords)])
        return flags, list(dict.fromkeys(keywords))

    def unchanged(message: Message) -> bool:
        state = new_state(message)
        return state is None or state == (message.flags, message.keywords)

    def rows() -> list[Message]:
        return [Message.from_db(connection.alias, _FLAG_FIELDS, row)
                for row in _FLAG_ROWS.rows(folder.pk, uids)]

    # PostgreSQL locks the folder row first and reads the messages once under
    # the lock: a read before the lock would have to be read again under it.
    lock_first = connection.features.has_select_for_update
    if not lock_first:
        # A STORE that changes nothing (flags already so, or every message
        # refused) answers from one read, without the write lock: it is as if
        # it ran at that read.
        current = rows()
        if all(unchanged(m) for m in current):
            return [], [m.uid for m in current if new_state(m) is None]
    read_locked = _read_under_lock()
    # No savepoint of its own (two statements fewer): nothing in it is caught, and
    # batching.run_calls gives each call of a batch its own.
    with transaction.atomic(savepoint=False):
        locked = lock_folders(folder.pk).get(folder.pk)
        if locked is None:
            return [], []  # the folder is gone: no message to change
        messages = current if read_locked else rows()  # read_locked: SQLite only
        bumped: set[int] = set()
        changed: list[Message] = []
        failed: list[int] = []
        for message in messages:
            state = new_state(message)
            if state is None:
                failed.append(message.uid)
                continue
            if state == (message.flags, message.keywords):
                continue
            message.flags, message.keywords = state
            message.modseq = _next_modseq(locked, bumped)
            changed.append(message)
        if changed:
            _update_rows(Message, changed, ["flags", "keywords", "modseq"])
            _update_rows(Folder, [locked], ["highestmodseq"])
            _publish_on_commit([locked])
    return [FlagChange(m.uid, m.flags, m.keywords, m.modseq) for m in changed], failed


_FLAG_FIELDS = _fields(Message, {"id", "uid", "flags", "keywords", "modseq"})
_FLAG_ROWS = CompiledQuery(
    lambda folder_id, uids: Message.objects.filter(folder_id=folder_id, uid__in=uids)
    .order_by("uid").values_list(*_FLAG_FIELDS), int, [int])


# --- housekeeping ------------------------------------------------------------------


def _unreferenced_blobs() -> models.QuerySet[Blob]:
    """Blobs no row points at, whichever app the reference comes from (the
    full-text index row is no reference: it goes with the blob)."""
    query = Blob.objects.all()
    for relation in Blob._meta.related_objects:
        if relation.related_model is not BlobText:
            query = query.filter(**{f"{relation.name}__isnull": True})
    return query


def collect_garbage(grace_seconds: float) -> int:
    """Delete blobs (rows, then files) unreferenced for longer than the grace
    period. A delivery that reuses a blob refreshes the file's mtime before it
    commits, so a file in use is never unlinked; see blobs.py."""
    cutoff = timezone.now() - timezone.timedelta(seconds=grace_seconds)
    store = get_blob_store()
    removed = 0
    forgotten: list[str] = []  # blobs whose rows are gone
    unreferenced = list(_unreferenced_blobs().filter(created__lt=cutoff)
                        .values_list("sha256", flat=True)[:10_000])
    # An upload with a message's very bytes is the same object: it stays.
    held = hooks.held_blobs(unreferenced) if unreferenced else set()
    for sha in unreferenced:
        with transaction.atomic():
            deleted, _ = _unreferenced_blobs().filter(pk=sha).delete()
        if deleted:
            forgotten.append(sha)
            if sha not in held and store.delete_if_older(sha, grace_seconds):
                removed += 1
    hooks.notify_collected(forgotten)
    return removed + _collect_files_without_rows(store, grace_seconds)


def discard_held_blob(sha256: str) -> bool:
    """Delete a blob kept without a message row (an import's upload) once its
    holder lets it go, unless a message or another holder still names it
    (two uploads of the same bytes are one object)."""
    if Blob.objects.filter(pk=sha256).exists() or hooks.held_blobs([sha256]):
        return False
    return get_blob_store().delete_if_older(sha256, 0)


def _collect_files_without_rows(store: BlobStore, grace_seconds: float) -> int:
    """Files a process wrote durably and then died before committing the row
    that names them: nothing references them, nothing else would remove them.
    The grace period keeps a write whose commit is still to come safe."""
    removed = store.remove_stale_temporaries(grace_seconds)
    names = list(store.files_older_than(grace_seconds))
    for start in range(0, len(names), 1000):
        chunk = names[start:start + 1000]
        known = set(Blob.objects.filter(pk__in=chunk).values_list("pk", flat=True))
        known |= hooks.held_blobs(chunk)
        for name in chunk:
            if name not in known and store.delete_if_older(name, grace_seconds):
                removed += 1
    return removed


def mailboxes_over_quota(mailboxes: Sequence[Mailbox], adding: int) -> list[Mailbox]:
    """The mailboxes that a message of ``adding`` bytes would push over quota
    (checked at RCPT time with the size the client declared)."""
    limited = [m for m in mailboxes if m.quota > 0]  # no query when none has a quota
    usage = _usage([m.pk for m in limited]) if limited else {}
    return [m for m in limited if _over_quota(m, usage[m.pk], adding)]
