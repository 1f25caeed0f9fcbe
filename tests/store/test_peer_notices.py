"""Folder change notices between the processes of one host without Redis
(apps/store/events.py ``PeerNotices``): a listener process's socket hears what
another process commits, and a socket left by a killed process is cleared."""

from __future__ import annotations

import asyncio
import socket

from apps.store import events
from apps.store.events import FolderChanged, PeerNotices


def test_a_change_reaches_the_other_process_subscribers(settings, tmp_path):
    settings.DATA_DIR = tmp_path

    async def scenario() -> FolderChanged:
        loop = asyncio.get_running_loop()
        heard: asyncio.Future[FolderChanged] = loop.create_future()
        unsubscribe = events.subscribe(7, heard.set_result)
        listening = PeerNotices()
        listening.listen(loop)
        try:
            # What another process's publish sends.
            PeerNotices().send([FolderChanged(7, 8, 9)])
            return await asyncio.wait_for(heard, 10)
        finally:
            listening.close(loop)
            unsubscribe()

    assert asyncio.run(scenario()) == FolderChanged(7, 8, 9)
    # Its socket goes with it.
    assert list(PeerNotices.directory().iterdir()) == []


def test_the_socket_of_a_killed_process_is_cleared_by_the_next_sender(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    directory = PeerNotices.directory()
    directory.mkdir(parents=True)
    # A socket file whose process died without removing it.
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(directory / "4194301"))
    gone.close()
    PeerNotices().send([FolderChanged(1, 2, 3)])
    assert list(directory.iterdir()) == []
