"""The signed-in user's folders and messages, found only inside their own
mailbox: an id from another mailbox is simply not found (404), whoever asks."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, F
from django.http import Http404

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.store.models import DEFAULT_FOLDERS, Flag, Folder, Message, SpecialUse
from mailhost.errors import Conflict

UNREAD_CACHE_SECONDS = 7 * 24 * 3600
# The sidebar's order (RFC 6154 special uses first, as most clients show them).
SPECIAL_ORDER = [SpecialUse.DRAFTS, SpecialUse.SENT, SpecialUse.ARCHIVE, SpecialUse.JUNK,
                 SpecialUse.TRASH]


@dataclass(frozen=True)
class FolderEntry:
    folder: Folder
    label: str  # the last level of the name
    depth: int  # indentation in the tree (0 for special folders)
    unread: int

    @property
    def is_special(self) -> bool:
        return self.folder.name == "INBOX" or bool(self.folder.special_use)


def _rank(folder: Folder) -> tuple[int, str]:
    if folder.name == "INBOX":
        return 0, ""
    if folder.special_use in SPECIAL_ORDER:
        return 1 + SPECIAL_ORDER.index(folder.special_use), ""
    return len(SPECIAL_ORDER) + 1, folder.name


def _unread_key(folder: Folder) -> str:
    # Every change of flags or contents raises HIGHESTMODSEQ, so a count
    # cached under it is right for as long as the key is asked for.
    return f"webmail:unread:{folder.pk}:{folder.highestmodseq}"


def unread_counts(folders: list[Folder]) -> dict[int, int]:
    """Unseen messages per folder: from the cache for folders unchanged since
    they were counted, the others in one grouped query."""
    keys = {_unread_key(folder): folder.pk for folder in folders}
    counts = {keys[key]: count for key, count in cache.get_many(list(keys)).items()}
    missing = [folder for folder in folders if folder.pk not in counts]
    if missing:
        rows = (Message.objects.filter(folder__in=missing)
                .annotate(seen=F("flags").bitand(Flag.SEEN)).filter(seen=0)
                .values("folder_id").annotate(count=Count("pk")).order_by())
        fresh = {folder.pk: 0 for folder in missing}
        fresh.update({row["folder_id"]: row["count"] for row in rows})
        cache.set_many({_unread_key(folder): fresh[folder.pk] for folder in missing},
                       timeout=UNREAD_CACHE_SECONDS)
        counts.update(fresh)
    return counts


def folder_entries(mailbox: Mailbox) -> list[FolderEntry]:
    """Every folder for the sidebar: Inbox, Drafts, Sent, Archive, Junk,
    Trash, then the others in tree order, each with its unread count."""
    folders = sorted(store.list_folders(mailbox), key=_rank)
    counts = unread_counts(folders)
    entries = []
    for folder in folders:
        levels = folder.name.split(Folder.DELIMITER)
        special = folder.name == "INBOX" or folder.special_use in SPECIAL_ORDER
        label = "Inbox" if folder.name == "INBOX" else levels[-1]
        entries.append(FolderEntry(folder, label, 0 if special else len(levels) - 1,
                                   counts.get(folder.pk, 0)))
    return entries


def special_folder(mailbox: Mailbox, use: str) -> Folder:
    """The folder with a special use (Trash, Junk…), or INBOX for ""."""
    if not use:
        return store.get_folder(mailbox, "INBOX")
    folder = Folder.objects.filter(mailbox=mailbox, special_use=use).order_by("pk").first()
    if folder is None:
        store.ensure_default_folders([mailbox.pk])
        folder = Folder.objects.filter(mailbox=mailbox, special_use=use).order_by("pk").first()
    if folder is None:  # deleted over IMAP: made again under its usual name
        name = {special: usual for usual, special in DEFAULT_FOLDERS}[use]
        try:
            folder = store.create_folder(mailbox, name, special_use=use)
        except Conflict:  # a plain folder has that name: it serves
            folder = store.get_folder(mailbox, name)
    return folder


def folder_of(mailbox: Mailbox, folder_id: int) -> Folder:
    folder = Folder.objects.filter(pk=folder_id, mailbox=mailbox).first()
    if folder is None:
        raise Http404
    return folder


def message_of(mailbox: Mailbox, message_id: int) -> Message:
    message = (Message.objects.select_related("folder", "blob")
               .filter(pk=message_id, folder__mailbox=mailbox).first())
    if message is None:
        raise Http404
    return message


def messages_of(mailbox: Mailbox, message_ids: list[int]) -> dict[Folder, list[int]]:
    """The UIDs of the given messages grouped by folder (ids of other
    mailboxes are left out, as if they did not exist)."""
    grouped: dict[Folder, list[int]] = {}
    folders: dict[int, Folder] = {}
    for message in (Message.objects.select_related("folder")
                    .filter(pk__in=message_ids, folder__mailbox=mailbox).order_by("uid")):
        folder = folders.setdefault(message.folder_id, message.folder)
        grouped.setdefault(folder, []).append(message.uid)
    return grouped
