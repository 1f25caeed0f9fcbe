"""What a mailbox looks like from outside its messages: folder names,
subscriptions and annotation entries, read in one go so that a watcher can
compare two looks (IMAP NOTIFY's MailboxName, SubscriptionChange and
metadata events, RFC 5465 §5.4-5.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.store.models import Folder, MetadataEntry, Subscription
from apps.store.services import ensure_default_folders


@dataclass(frozen=True)
class Outline:
    folders: dict[int, str] = field(default_factory=dict)  # folder id -> name
    subscribed: frozenset[str] = frozenset()
    # (folder id or None for the server's entries, entry name) -> row id; a
    # changed value is a new row (metadata.set_metadata), so a new id.
    entries: dict[tuple[int | None, str], int] = field(default_factory=dict)


def mailbox_outline(mailbox_id: int, *, subscriptions: bool, metadata: bool) -> Outline:
    """The mailbox's folders, and its subscriptions and annotation entries when
    asked: one query each."""
    ensure_default_folders([mailbox_id])  # as a LIST would show them
    folders = dict(Folder.objects.filter(mailbox_id=mailbox_id).values_list("id", "name"))
    subscribed = frozenset(Subscription.objects.filter(mailbox_id=mailbox_id).values_list(
        "name", flat=True)) if subscriptions else frozenset()
    entries = {(folder_id, name): pk for folder_id, name, pk in MetadataEntry.objects.filter(
        mailbox_id=mailbox_id).values_list("folder_id", "name", "id")} if metadata else {}
    return Outline(folders, subscribed, entries)
