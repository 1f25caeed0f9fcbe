"""Mailbox and server annotations: IMAP METADATA (RFC 5464).

Entries live per mailbox (the user's "server" entries, folder None) or per
folder. Every user is alone in their mailbox, so /shared/ entries are stored
like /private/ ones; both are kept apart by their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from django.db import transaction

from apps.directory.models import Mailbox
from apps.store.models import Folder, MetadataEntry
from apps.store.services import get_folder, validate_folder_name
from mailhost.errors import Invalid, MailhostError

# Bounds a client cannot exceed (RFC 5464 §4.3 MAXSIZE and TOOMANY).
MAX_VALUE_SIZE = 64 * 1024
MAX_ENTRIES = 1000
MAX_NAME = 1000

Depth = Literal["0", "1", "infinity"]


class MaxSize(MailhostError):
    """NO [METADATA MAXSIZE n]: a value is larger than ``MAX_VALUE_SIZE``."""

    def __init__(self) -> None:
        super().__init__(f"values are limited to {MAX_VALUE_SIZE} octets")
        self.limit = MAX_VALUE_SIZE


class TooMany(MailhostError):
    """NO [METADATA TOOMANY]: the mailbox holds ``MAX_ENTRIES`` entries."""

    def __init__(self) -> None:
        super().__init__(f"at most {MAX_ENTRIES} entries per mailbox")


def validate_entry(name: str) -> str:
    """The canonical (lower-case) form of an entry name, or Invalid (RFC 5464 §3.2:
    under /private or /shared, no "*" or "%", no empty levels, no control
    characters)."""
    lowered = name.lower()
    levels = lowered.split("/")
    if (len(name) > MAX_NAME or len(levels) < 3 or levels[0] != ""
            or levels[1] not in ("private", "shared") or "" in levels[2:]):
        raise Invalid(f"invalid entry name {name[:80]}")
    if any(c in "*%" or ord(c) < 0x20 or ord(c) >= 0x7F for c in name):
        raise Invalid(f"invalid character in entry name {name[:80]}")
    return lowered


def _folder(mailbox: Mailbox, folder_name: str) -> Folder | None:
    # RFC 5464 §4.2: the empty mailbox name means the server's entries.
    return get_folder(mailbox, validate_folder_name(folder_name)) if folder_name else None


def get_metadata(mailbox: Mailbox, folder_name: str, names: Sequence[str],
                 depth: Depth = "0") -> list[tuple[str, bytes]]:
    """RFC 5464 §4.2 GETMETADATA: the entries named that have a value, and with
    DEPTH 1 or infinity those below them, in name order. NotFound if the
    folder does not exist."""
    folder = _folder(mailbox, folder_name)
    wanted = [validate_entry(name) for name in names]
    query = MetadataEntry.objects.filter(mailbox=mailbox, folder=folder)
    if depth == "0":
        query = query.filter(name__in=wanted)
    rows = query.order_by("name").values_list("name", "value")
    found = []
    for name, value in rows:
        for entry in wanted:
            below = name[len(entry) + 1:] if name.startswith(entry + "/") else None
            if name == entry or (below is not None and (depth == "infinity"
                                                        or "/" not in below)):
                found.append((name, bytes(value)))
                break
    return found


def set_metadata(mailbox: Mailbox, folder_name: str,
                 values: Sequence[tuple[str, bytes | None]]) -> None:
    """RFC 5464 §4.3 SETMETADATA: all the values or none; None removes an entry."""
    folder = _folder(mailbox, folder_name)
    changes = {validate_entry(name): value for name, value in values}
    if any(value is not None and len(value) > MAX_VALUE_SIZE for value in changes.values()):
        raise MaxSize()
    with transaction.atomic():
        entries = MetadataEntry.objects.filter(mailbox=mailbox, folder=folder)
        removed = [name for name, value in changes.items() if value is None]
        entries.filter(name__in=removed).delete()
        stored = {name: value for name, value in changes.items() if value is not None}
        if not stored:
            return
        existing = set(entries.filter(name__in=list(stored)).values_list("name", flat=True))
        added = len(set(stored) - existing)
        if added and MetadataEntry.objects.filter(mailbox=mailbox).count() + added > MAX_ENTRIES:
            raise TooMany()
        # A changed value is a new row: watchers tell changes by row id
        # (apps/store/outline.py) without reading values.
        entries.filter(name__in=list(stored)).delete()
        MetadataEntry.objects.bulk_create(
            [MetadataEntry(mailbox=mailbox, folder=folder, name=name, value=value)
             for name, value in stored.items()])
