"""Folder change notifications for IMAP sessions of this process.

In-process deliveries reach sessions through ``apps.store.events`` directly.
Changes made by other processes arrive by Redis pub/sub on ``events.channel()``
when ``REDIS_URL`` is set; without Redis, as datagrams from the other processes
of the host (``events.peer_notices``, bound by ``runmailservers``), and one
poller per event loop compares the HIGHESTMODSEQ of every watched folder every
MAILHOST_IMAP_POLL_SECONDS, in one query for all of them, for a notice that
went astray. Either way the event is handed to ``events.dispatch_local``, so a
session only ever listens in one place.

The sessions that one change wakes (hundreds in IDLE on one INBOX) do not read
it one after another: sessions that look at the same folder from the same
MODSEQ share one ``folder_changes`` query, and new messages already given
\\Recent by a session of this process are not claimed again (no write). Nor
are they woken twice by one change: a change made in this process, told at
once, is not told again when Redis echoes it or the poller sees it. Sessions
in a plain IDLE (no NOTIFY, no search contexts) are not woken at all: one task
per folder reads the change once and tells each of them, so that ten thousand
idlers cost one read and ten thousand writes, not ten thousand task wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings

from apps.store import events
from apps.store import services as store
from apps.store.batching import run_store_call
from apps.store.models import Folder
from apps.store.services import FolderChanges, highest_modseqs
from mailhost.asyncdb import database_sync_to_async

if TYPE_CHECKING:
    from apps.imap.session import IMAPSession

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
T = TypeVar("T")

# Marks order news against reads in one process: a read started after a
# session's latest news (a larger mark) is sure to include it.
_marks = itertools.count(1)


def news_mark() -> int:
    return next(_marks)


class Watcher:
    """One per event loop: the folders its sessions watch and the task that
    brings them news from other processes."""

    def __init__(self) -> None:
        # folder id -> (mailbox id, last HIGHESTMODSEQ seen, number of watchers)
        self.folders: dict[int, list[int]] = {}
        self.task: asyncio.Task[None] | None = None
        # what is read -> (mark when started, the read in flight)
        self._reads: dict[Hashable, tuple[int, asyncio.Task[Any]]] = {}
        # folder id -> UIDNEXT up to which a session of this process took \Recent
        self._claimed: dict[int, int] = {}
        self._claiming: dict[int, asyncio.Task[tuple[int, int]]] = {}
        # folder id -> sessions in a plain IDLE on it, and the task telling them news
        self._idlers: dict[int, set[IMAPSession]] = {}
        self._telling: dict[int, asyncio.Task[None]] = {}

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
            self._claimed.pop(folder_id, None)

    async def shared(self, key: Hashable, after: int,
                     read: Callable[[], Coroutine[Any, Any, T]]) -> tuple[int, T]:
        """The result of ``read``, shared with the other sessions of this loop
        that ask for the same ``key`` meanwhile, provided the shared read
        started after mark ``after`` (the asker's latest news); and the mark
        of the read, for a later ``after``."""
        entry = self._reads.get(key)
        if entry is None or entry[0] <= after:
            task = asyncio.get_running_loop().create_task(read())
            entry = self._reads[key] = (news_mark(), task)

            def forget(_task: asyncio.Task, key=key, entry=entry) -> None:
                if self._reads.get(key) is entry:
                    del self._reads[key]

            task.add_done_callback(forget)
        return entry[0], await asyncio.shield(entry[1])

    async def folder_changes(self, folder_id: int, since: int,
                             after: int) -> FolderChanges | None:
        """``store.folder_changes``, read once for the sessions that ask for
        the same folder and MODSEQ (``shared``)."""
        _mark, changes = await self.shared(
            ("changes", folder_id, since), after,
            lambda: database_sync_to_async(store.folder_changes)(folder_id, since))
        return changes

    async def claim_recent(self, folder_id: int, uidnext: int, *,
                           head: tuple[int, int] | None = None) -> tuple[int, int]:
        """``store.claim_recent`` (with its ``head``) unless a session of this
        process has already taken \\Recent for every UID below ``uidnext``
        (RFC 3501 §2.3.2: one session gets it); concurrent claims for one
        folder wait for each other."""
        while True:
            if self._claimed.get(folder_id, 0) >= uidnext:
                return 0, 0
            pending = self._claiming.get(folder_id)
            if pending is None or pending.done():
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        claim = asyncio.get_running_loop().create_task(
            run_store_call(store.claim_recent, Folder(pk=folder_id), head=head))
        self._claiming[folder_id] = claim

        def record(task: asyncio.Task[tuple[int, int]]) -> None:
            # Runs before any waiter resumes, so that none claims again for nothing.
            if self._claiming.get(folder_id) is task:
                del self._claiming[folder_id]
            if not task.cancelled() and task.exception() is None and folder_id in self.folders:
                self._claimed[folder_id] = max(self._claimed.get(folder_id, 0), task.result()[1])

        claim.add_done_callback(record)
        return await asyncio.shield(claim)

    # --- plain idlers, told together
    def idle_in(self, session: IMAPSession, folder_id: int) -> None:
        self._idlers.setdefault(folder_id, set()).add(session)

    def idle_out(self, session: IMAPSession, folder_id: int) -> None:
        idlers = self._idlers.get(folder_id)
        if idlers is not None:
            idlers.discard(session)
            if not idlers:
                del self._idlers[folder_id]

    def idle_news(self, folder_id: int) -> None:
        """News of a folder that sessions of this loop idle on: one task tells them."""
        task = self._telling.get(folder_id)
        if task is None or task.done():
            self._telling[folder_id] = asyncio.get_running_loop().create_task(
                self._tell_idlers(folder_id))

    async def _tell_idlers(self, folder_id: int) -> None:
        """Read the folder's changes once for every idler with news (once per
        MODSEQ they stand at) and hand them over; again while news keeps coming."""
        while True:
            waiting = [s for s in self._idlers.get(folder_id, ()) if s.has_news()]
            if not waiting:
                return
            # A read started after this mark covers all news up to it.
            mark = news_mark()
            groups: dict[int, list[IMAPSession]] = {}
            for session in waiting:
                groups.setdefault(session.idle_modseq(), []).append(session)
            try:
                for since, group in groups.items():
                    changes = await self.folder_changes(folder_id, since, mark)
                    # RFC 3501 §2.3.2: one session gets \Recent. The others are
                    # told at once, that one after the claim (a write).
                    claimant = next((s for s in group if s.claims_recent(changes)), None)
                    self._tell(folder_id, since, [s for s in group if s is not claimant],
                               changes, (0, 0), mark)
                    if claimant is not None and changes is not None:
                        recent = await self.claim_recent(folder_id, changes.uidnext)
                        self._tell(folder_id, since, [claimant], changes, recent, mark)
            except Exception:
                # Each looks for itself then (and fails in its own session).
                log.exception("IMAP idle news of folder %d failed", folder_id)
                for session in waiting:
                    session.wake()
                return

    def _tell(self, folder_id: int, since: int, group: list[IMAPSession],
              changes: FolderChanges | None, recent: tuple[int, int], mark: int) -> None:
        idlers = self._idlers.get(folder_id, set())
        for session in group:
            # Gone from IDLE meanwhile, or its view moved on: it looks itself.
            if session in idlers and session.idle_modseq() == since:
                session.tell_idle_news(changes, recent, mark=mark)

    async def _run(self) -> None:
        if settings.REDIS_URL:
            await self._listen_redis()
        else:
            await self._poll()

    async def _poll(self) -> None:
        while self.folders:
            await asyncio.sleep(settings.MAILHOST_IMAP_POLL_SECONDS)
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
                    # Not if made in this process or heard of meanwhile: told at once.
                    events.dispatch_if_news(events.FolderChanged(entry[0], folder_id, modseq))

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        while self.folders:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(events.channel())
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
                                # Not our own change coming back from Redis.
                                events.dispatch_if_news(event)
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
