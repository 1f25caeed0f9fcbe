"""Listeners told when messages move or are copied between folders.

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
