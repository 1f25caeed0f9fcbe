"""Group commit for asyncio front ends.

Deliveries that arrive while a batch is being written wait and then go
together in the next batch: one transaction, one round of fsyncs. Each caller
still gets its own answer, and gets it only after its batch is durable."""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings

from apps.store.services import DeliveryRequest, deliver_batch
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import MailhostError


@database_sync_to_async
def _deliver_batch_in_thread(requests: list[DeliveryRequest]) -> list[MailhostError | None]:
    return list(deliver_batch(requests))


class GroupCommitter:
    def __init__(self, max_batch: int | None = None) -> None:
        self.max_batch = max_batch or settings.MAILHOST_GROUP_COMMIT_MAX
        self._pending: list[tuple[DeliveryRequest, asyncio.Future[MailhostError | None]]] = []
        self._running = False

    async def submit(self, request: DeliveryRequest) -> None:
        """Store the request durably; raise its error (OverQuota, …) if refused."""
        future: asyncio.Future[MailhostError | None] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        error = await future
        if error is not None:
            raise error

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    results = await _deliver_batch_in_thread([request for request, _ in batch])
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
        finally:
            self._running = False


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommitter] = (
    weakref.WeakKeyDictionary()
)


def committer() -> GroupCommitter:
    """The group committer of the running loop."""
    loop = asyncio.get_running_loop()
    instance = _committers.get(loop)
    if instance is None:
        instance = _committers[loop] = GroupCommitter()
    return instance
