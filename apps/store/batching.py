"""Group commit for asyncio front ends.

Work that arrives while a batch is being written waits and then goes together
in the next batch: one transaction, one round of fsyncs. Each caller still
gets its own answer, and gets it only after its batch is durable.

With few sessions, batches that start the moment one item waits alternate
between two halves of the sessions (5 sessions: batches of about 2.2), each
paying the batch's fixed cost (a commit, a round of fsyncs). So after a
batch, the next one waits for the sessions just answered to come back with
their next item, until it is as large as the last batch and what waited
beside it, but never longer than twice what the last batch took to write
(once was too short for a session's next MAIL, RCPT and DATA on a busy
machine: 5 sessions then made batches of 3.6, with twice 4.4). A lone
session is never held: its next item is all the batch waits for. The store's
deliveries use it (``deliver_batch``), and so does any service with a batch
function of the same shape (the inbound spool's ``spool_batch``, the outbound
queue's ``enqueue_batch``)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connection, transaction

from apps.store.models import Folder
from apps.store.services import deliver_batch, lock_folders
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import MailhostError

Item = TypeVar("Item")
Result = TypeVar("Result")

# A batch function: one result per item, in order; a MailhostError as a
# result refuses that item alone (the others are stored).
BatchFunction = Callable[[Sequence[Item]], Sequence[Result | MailhostError]]


class GroupCommitter(Generic[Item, Result]):
    def __init__(self, write_batch: BatchFunction[Item, Result],
                 max_batch: int | None = None) -> None:
        self.max_batch = max_batch or settings.MAILHOST_GROUP_COMMIT_MAX
        self._write_batch = database_sync_to_async(
            lambda items: list(write_batch(items)))
        self._pending: list[tuple[Item, asyncio.Future[Result | MailhostError]]] = []
        self._running = False
        self._drain_task: asyncio.Task[None] | None = None  # the loop holds tasks weakly
        # While the drain waits for a batch to fill: the size that ends the
        # wait, and the future that submit resolves when it is reached.
        self._fill_target = 0
        self._filled: asyncio.Future[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Store the item durably and return its result; raise its error
        (OverQuota, …) if it was refused."""
        future: asyncio.Future[Result | MailhostError] = (
            asyncio.get_running_loop().create_future())
        self._pending.append((item, future))
        filled = self._filled
        if filled is not None and len(self._pending) >= self._fill_target and not filled.done():
            filled.set_result(None)
        if not self._running:
            self._running = True
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        result = await future
        if isinstance(result, MailhostError):
            raise result
        return result

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.monotonic()
                try:
                    results = await self._write_batch([item for item, _ in batch])
                except BaseException as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                # Even with nothing pending: the sessions just answered come back.
                await self._fill(min(len(batch) + len(self._pending), self.max_batch),
                                 2 * (time.monotonic() - started))
        finally:
            self._running = False
            self._filled = None

    async def _fill(self, target: int, timeout: float) -> None:
        """Wait until ``target`` items are pending, or ``timeout`` seconds."""
        if len(self._pending) >= target:
            return
        loop = asyncio.get_running_loop()
        self._fill_target = target
        self._filled = filled = loop.create_future()
        timer = loop.call_later(timeout, lambda: filled.done() or filled.set_result(None))
        try:
            await filled
        finally:
            timer.cancel()
            self._filled = None


@dataclass(frozen=True)
class StoreCall:
    """One call of a store service (``set_flags``, ``expunge``, …) to run in a
    shared transaction by ``run_calls``."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def run_calls(calls: Sequence[StoreCall]) -> list[Any | MailhostError]:
    """Run store writes that arrived together in one transaction: one commit and
    one sync of the database log instead of one each, and on SQLite one turn
    of the single writer. Each call keeps its own savepoint, so a call refused
    with a MailhostError is undone alone and returns that error.

    The folders the calls name are locked first, all at once in primary-key
    order as ``deliver_batch`` does, so that two batches (in this process or
    another) never wait for each other's folders in opposite orders. Not on
    SQLite, which has no row locks (its BEGIN IMMEDIATE has locked the whole
    database), nor for a call alone, which locks what it writes itself."""
    results: list[Any | MailhostError] = []
    folder_ids = {arg.pk for call in calls for arg in call.args if isinstance(arg, Folder)}
    with transaction.atomic():
        if len(calls) > 1 and connection.features.has_select_for_update:
            lock_folders(*folder_ids)
        for call in calls:
            try:
                # A call alone needs no savepoint: if refused, the whole
                # transaction is rolled back, which undoes that call alone.
                with transaction.atomic(savepoint=len(calls) > 1):
                    results.append(call.function(*call.args, **call.kwargs))
            except MailhostError as error:
                results.append(error)
    return results


async def run_store_call(function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """``function(*args, **kwargs)`` in a worker thread, batched with the store
    calls of other sessions that arrive meanwhile (``run_calls``); its answer
    comes once the batch is committed."""
    return await committer(run_calls).submit(StoreCall(function, args, kwargs))


_committers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Callable[..., Any], GroupCommitter[Any, Any]]
] = weakref.WeakKeyDictionary()


def committer(
    write_batch: BatchFunction[Item, Result] = deliver_batch,  # type: ignore[assignment]
) -> GroupCommitter[Item, Result]:
    """The running loop's group committer for ``write_batch`` (by default the
    store's deliveries: submit a DeliveryRequest, get None once it is stored)."""
    per_function = _committers.setdefault(asyncio.get_running_loop(), {})
    instance = per_function.get(write_batch)
    if instance is None:
        instance = per_function[write_batch] = GroupCommitter(write_batch)
    return instance
