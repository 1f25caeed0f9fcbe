"""Folder change notifications for IMAP sessions of this process.

In-process deliveries reach sessions through ``apps.store.events`` directly.
Changes made by other processes arrive by Redis pub/sub on ``events.CHANNEL``
when ``REDIS_URL`` is set; without Redis, one poller per event loop compares
the HIGHESTMODSEQ of every watched folder once a second, in one query for all
of them. Either way the event is handed to ``events.dispatch_local``, so a
session only ever listens in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from django.conf import settings

from apps.store import events
from apps.store.services import highest_modseqs
from mailhost.asyncdb import database_sync_to_async

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class Watcher:
    """One per event loop: the folders its sessions watch and the task that
    brings them news from other processes."""

    def __init__(self) -> None:
        # folder id -> (mailbox id, last HIGHESTMODSEQ seen, number of watchers)
        self.folders: dict[int, list[int]] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, mailbox_id: int, folder_id: int, modseq: int) -> None:
        entry = self.folders.setdefault(folder_id, [mailbox_id, modseq, 0])
        entry[1] = max(entry[1], modseq)
        entry[2] += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def unwatch(self, folder_id: int) -> None:
        entry = self.folders.get(folder_id)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del self.folders[folder_id]

    async def _run(self) -> None:
        if settings.REDIS_URL:
            await self._listen_redis()
        else:
            await self._poll()

    async def _poll(self) -> None:
        while self.folders:
            await asyncio.sleep(POLL_SECONDS)
            ids = list(self.folders)
            if not ids:
                break
            try:
                heads = await database_sync_to_async(highest_modseqs)(ids)
            except Exception:
                log.exception("IMAP change poller failed; retrying")
                continue
            for folder_id, modseq in heads.items():
                entry = self.folders.get(folder_id)
                if entry is not None and modseq > entry[1]:
                    entry[1] = modseq
                    events.dispatch_local(events.FolderChanged(entry[0], folder_id, modseq))

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        while self.folders:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(events.CHANNEL)
                    while self.folders:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=POLL_SECONDS)
                        if message is None:
                            continue
                        with contextlib.suppress(ValueError, TypeError, KeyError):
                            event = events.FolderChanged.from_json(message["data"])
                            entry = self.folders.get(event.folder_id)
                            if entry is not None and event.highestmodseq > entry[1]:
                                entry[1] = event.highestmodseq
                                events.dispatch_local(event)
            except Exception:
                log.exception("IMAP Redis listener failed; reconnecting")
                await asyncio.sleep(POLL_SECONDS)
            finally:
                await client.aclose()


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watcher] = (
    weakref.WeakKeyDictionary())


def watcher() -> Watcher:
    loop = asyncio.get_running_loop()
    found = _watchers.get(loop)
    if found is None:
        found = _watchers[loop] = Watcher()
    return found
