"""Live updates: the store's change events as Server-Sent Events.

An async view (the web server is ASGI), so an open tab costs a coroutine and
a subscription, never a worker thread. Changes made in this process arrive
through ``apps.store.events`` directly; changes made by other processes (the
mail listeners, another web worker) through the watcher that IMAP IDLE uses
(``apps.imap.notify``: Redis pub/sub when REDIS_URL is set, else one
HIGHESTMODSEQ poll a second for all the folders this process watches). The
browser is told only "folder F changed": it fetches what it shows again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from django.http import Http404, HttpRequest, HttpResponseBase, StreamingHttpResponse

from apps.directory.models import Mailbox
from apps.imap import notify
from apps.store import events
from apps.store.models import Folder
from mailhost.asyncdb import database_sync_to_async

# A stream ends after this long and the browser's EventSource reconnects
# (after RETRY_MS): a server restart or a deploy never strands a tab.
STREAM_SECONDS = 300
KEEPALIVE_SECONDS = 15
RETRY_MS = 2000
# Changes that come together (a move touches two folders) go out as one.
COALESCE_SECONDS = 0.2


def _mailbox_folders(user_id: int) -> tuple[int, dict[int, int]] | None:
    mailbox = Mailbox.objects.filter(user_id=user_id).values_list("pk", flat=True).first()
    if mailbox is None:
        return None
    return mailbox, dict(Folder.objects.filter(mailbox_id=mailbox)
                         .values_list("pk", "highestmodseq"))


def _frame(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _changes(mailbox_id: int, folders: dict[int, int]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[events.FolderChanged] = asyncio.Queue()
    unsubscribe = events.subscribe(mailbox_id, queue.put_nowait)
    watcher = notify.watcher()
    for folder_id, modseq in folders.items():
        watcher.watch(mailbox_id, folder_id, modseq)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield _frame("hello", {"folders": len(folders)})
        while (left := deadline - loop.time()) > 0:
            try:
                first = await asyncio.wait_for(queue.get(), min(KEEPALIVE_SECONDS, left))
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)
            changed = {first.folder_id}
            while not queue.empty():
                changed.add(queue.get_nowait().folder_id)
            yield _frame("changed", {"folders": sorted(changed)})
    finally:
        unsubscribe()
        for folder_id in folders:
            watcher.unwatch(folder_id)


async def stream(request: HttpRequest) -> HttpResponseBase:
    user = await request.auser()
    found = None
    if user.is_authenticated:
        found = await database_sync_to_async(_mailbox_folders)(user.pk)
    if found is None:
        raise Http404  # as every webmail URL answers those who have no mailbox
    mailbox_id, folders = found
    response = StreamingHttpResponse(_changes(mailbox_id, folders),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy must pass each event on at once
    return response
