"""The live event stream, in process: an async view that tells a signed-in
user's tab which folders changed, from the store's own change events."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from django.test import AsyncClient

from apps.store import services as store
from mailhost.asyncdb import database_sync_to_async
from tests.factories import make_mailbox
from tests.webmail.conftest import build

T = TypeVar("T")


def run(coroutine: Coroutine[object, object, T]) -> T:
    """Run a coroutine on an event loop of its own thread (Playwright's sync
    API may already run a loop in the test's thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def next_frame(chunks) -> bytes:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(anext(chunks), 10)


@pytest.mark.django_db(transaction=True)
def test_the_stream_tells_of_new_mail_and_moves() -> None:
    mailbox = make_mailbox("bob@here.example")
    inbox = store.get_folder(mailbox, "INBOX")
    junk = store.get_folder(mailbox, "Junk")

    async def watch() -> None:
        client = AsyncClient()
        await client.aforce_login(mailbox.user)
        response = await client.get("/mail/events/")
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        chunks = aiter(response.streaming_content)
        assert (await next_frame(chunks)).startswith(b"retry: ")
        assert b"event: hello" in await next_frame(chunks)
        message = (await database_sync_to_async(store.deliver)([mailbox], build()))[0]
        frame = await next_frame(chunks)
        assert frame == f'event: changed\ndata: {{"folders": [{inbox.pk}]}}\n\n'.encode()
        await database_sync_to_async(store.move)(inbox, [message.uid], junk)
        frame = await next_frame(chunks)
        assert frame == (f'event: changed\ndata: {{"folders": [{min(inbox.pk, junk.pk)}, '
                         f'{max(inbox.pk, junk.pk)}]}}\n\n').encode()
        await chunks.aclose()

    run(watch())


@pytest.mark.django_db(transaction=True)
def test_the_stream_is_only_for_mailbox_users() -> None:
    async def ask() -> int:
        response = await AsyncClient().get("/mail/events/")
        return response.status_code

    assert run(ask()) == 404
