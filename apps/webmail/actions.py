"""What the reader does to messages, through the store's own calls (``move``,
``set_flags``, ``expunge``: the ones IMAP MOVE, STORE and EXPUNGE use), so
an IMAP session sees each change at once and the antispam hook learns from
moves into and out of Junk.

A move or delete records how to take it back (``Undo``): the folder the
messages came from and the UIDs they were given where they went.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.store.models import Flag, Folder, Message, SpecialUse
from apps.webmail.folders import special_folder
from mailhost.errors import Invalid

FLAG_ACTIONS = {  # action -> (set_flags mode, flag, what the flash says)
    "read": ("add", Flag.SEEN, "read"), "unread": ("remove", Flag.SEEN, "unread"),
    "flag": ("add", Flag.FLAGGED, "flagged"), "unflag": ("remove", Flag.FLAGGED, "not flagged"),
}
# Moves to a special folder: action -> special use ("" is INBOX).
MOVE_ACTIONS = {"archive": SpecialUse.ARCHIVE, "junk": SpecialUse.JUNK, "notjunk": ""}
ACTIONS = {*FLAG_ACTIONS, *MOVE_ACTIONS, "move", "delete"}


@dataclass(frozen=True)
class Undo:
    """Moves to reverse: (from folder id, to folder id, UIDs in the "to" folder)."""

    moves: list[tuple[int, int, list[int]]]

    def to_session(self) -> list:
        return [list(move) for move in self.moves]

    @classmethod
    def from_session(cls, value: object) -> Undo | None:
        try:
            return cls([(int(a), int(b), [int(u) for u in uids])
                        for a, b, uids in value])  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Outcome:
    summary: str  # for the flash message
    undo: Undo | None = None


def _plural(count: int) -> str:
    return f"{count} message{'s' if count != 1 else ''}"


def _move(groups: dict[Folder, list[int]], target: Folder) -> Undo:
    moves = []
    for folder, uids in groups.items():
        if folder.pk == target.pk:
            continue
        mapping = store.move(folder, uids, target)
        if mapping:
            moves.append((folder.pk, target.pk, [new for _old, new in mapping]))
    return Undo(moves)


@transaction.atomic
def apply(mailbox: Mailbox, action: str, groups: dict[Folder, list[int]],
          target: Folder | None = None) -> Outcome:
    """Do ``action`` to messages given as UIDs per folder (of ``mailbox``), in
    one transaction however many folders they come from."""
    count = sum(len(uids) for uids in groups.values())
    if action in FLAG_ACTIONS:
        mode, bit, label = FLAG_ACTIONS[action]
        for folder, uids in groups.items():
            store.set_flags(folder, uids, mode=mode, flags=bit)
        return Outcome(f"Marked {_plural(count)} as {label}.")
    if action == "move":
        if target is None:
            raise Invalid("choose a folder to move to")
        return Outcome(f"Moved {_plural(count)} to {target.name}.", _move(groups, target))
    if action in MOVE_ACTIONS:
        folder = special_folder(mailbox, MOVE_ACTIONS[action])
        undo = _move(groups, folder)
        label = "Inbox" if folder.name == "INBOX" else folder.name
        return Outcome(f"Moved {_plural(count)} to {label}.", undo)
    if action == "delete":
        trash = special_folder(mailbox, SpecialUse.TRASH)
        in_trash = {f: uids for f, uids in groups.items() if f.pk == trash.pk}
        elsewhere = {f: uids for f, uids in groups.items() if f.pk != trash.pk}
        for folder, uids in in_trash.items():
            _delete_for_good(folder, uids)
        undo = _move(elsewhere, trash) if elsewhere else None
        if in_trash and not elsewhere:
            return Outcome(f"Deleted {_plural(count)} for good.")
        return Outcome(f"Moved {_plural(count)} to Trash.", undo)
    raise Invalid(f"unknown action {action}")


def _delete_for_good(folder: Folder, uids: list[int]) -> None:
    # As an IMAP client does it: \Deleted, then UID EXPUNGE of just those.
    store.set_flags(folder, uids, mode="add", flags=Flag.DELETED)
    store.expunge(folder, uids)


def empty_folder(folder: Folder) -> int:
    """Delete every message of a folder for good (Empty Trash / Junk)."""
    uids = list(Message.objects.filter(folder=folder).values_list("uid", flat=True))
    if uids:
        _delete_for_good(folder, uids)
    return len(uids)


@transaction.atomic
def undo(mailbox: Mailbox, last: Undo) -> int:
    """Move the messages of the last move back where they were; returns how
    many came back (those deleted or moved on meanwhile stay where they are)."""
    folders = {f.pk: f for f in Folder.objects.filter(
        mailbox=mailbox, pk__in={pk for move in last.moves for pk in move[:2]})}
    back = 0
    for source_id, target_id, uids in last.moves:
        source, target = folders.get(source_id), folders.get(target_id)
        if source is None or target is None:
            continue
        back += len(store.move(target, uids, source))
    return back
