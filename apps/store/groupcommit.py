"""A generic group committer for asyncio front ends (DESIGN.md "Group commit").

Requests that arrive while a batch is being written wait and go together in
the next one: one call of ``write_batch`` (one transaction, one round of
fsyncs). Each caller gets its own result, and only after its batch is durable.
``write_batch`` runs in a worker thread and returns one result per request,
an exception instance for a refused one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from mailhost.asyncdb import database_sync_to_async

Request = TypeVar("Request")
Result = TypeVar("Result")


class GroupCommitter(Generic[Request, Result]):
    def __init__(
        self, write_batch: Callable[[list[Request]], Sequence[Result | Exception]],
        max_batch: int,
    ) -> None:
        self._write_batch = database_sync_to_async(write_batch)
        self.max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future[Result | Exception]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly

    async def submit(self, request: Request) -> Result:
        """The request's result once its batch is durable; raises its refusal."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result | Exception] = loop.create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    results = await self._write_batch([request for request, _ in batch])
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
