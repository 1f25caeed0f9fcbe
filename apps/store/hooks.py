"""Listeners told when messages move or are copied between folders, and when
the garbage collector has removed blobs; and the holders the collector asks
before removing a blob that no message row names (an import's upload).

The store calls them after its transaction commits, whichever front end asked
for the move (IMAP MOVE/COPY, webmail), so that an app that cares (antispam
training on Junk) hooks in once instead of in every protocol. A listener must
be quick (enqueue a task); an error in one is logged and does not undo the move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transfer:
    """Messages copied or moved from one folder to another."""

    mailbox_id: int
    source_folder_id: int
    source_special_use: str
    target_folder_id: int
    target_special_use: str
    blob_ids: tuple[str, ...]
    moved: bool


TransferListener = Callable[[Transfer], None]
_listeners: list[TransferListener] = []


def register_transfer_listener(listener: TransferListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def notify_transfer(transfer: Transfer) -> None:
    for listener in list(_listeners):
        try:
            listener(transfer)
        except Exception:
            log.exception("transfer listener %r failed", listener)


CollectionListener = Callable[[list[str]], None]
_collection_listeners: list[CollectionListener] = []


def register_collection_listener(listener: CollectionListener) -> None:
    """``listener(removed_blob_ids)`` after each garbage collection, so that an
    app keeping rows about blobs or messages without a foreign key (POP3's
    sizes and hidden messages) drops those whose subject is gone."""
    if listener not in _collection_listeners:
        _collection_listeners.append(listener)


def notify_collected(blob_ids: list[str]) -> None:
    for listener in list(_collection_listeners):
        try:
            listener(blob_ids)
        except Exception:
            log.exception("collection listener %r failed", listener)


HolderCheck = Callable[[list[str]], set[str]]
_holders: list[HolderCheck] = []


def register_blob_holder(holder: HolderCheck) -> None:
    """``holder(names)`` returns those of ``names`` that an app keeps in the
    blob store without a message row (an import's upload): the garbage
    collector leaves them alone. Unlike a listener's, a holder's error is
    not swallowed: a collection that cannot ask must not delete."""
    if holder not in _holders:
        _holders.append(holder)


def held_blobs(names: list[str]) -> set[str]:
    held: set[str] = set()
    for holder in list(_holders):
        held |= holder(names)
    return held
