"""Change notifications: "folder F of mailbox M changed, now at MODSEQ N".

Store services publish after their transaction commits. Subscribers in the
same process (IMAP IDLE sessions) are called on their own event loop; with
REDIS_URL set the event also goes to Redis pub/sub so that listener processes
on other hosts hear it. Without Redis, other processes notice changes by
comparing HIGHESTMODSEQ (see the IMAP server's poller): correct, only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "mailhost:folder-changes"


def channel() -> str:
    """The Redis pub/sub channel of this installation's folder changes. Redis
    hands a message to every subscriber of its channel whatever database each
    selected (Redis manual, "Redis Pub/Sub": Pub/Sub has no relation to the key
    space), so the channel names the database of REDIS_URL: installations
    that share a Redis server on databases of their own do not hear each
    other's changes (a foreign MODSEQ would hide their own from a watcher)."""
    from redis.connection import parse_url

    return f"{CHANNEL_PREFIX}:{parse_url(settings.REDIS_URL).get('db', 0)}"


@dataclass(frozen=True)
class FolderChanged:
    mailbox_id: int
    folder_id: int
    highestmodseq: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> FolderChanged:
        return cls(**json.loads(raw))


Callback = Callable[[FolderChanged], None]

_lock = threading.Lock()
_subscribers: dict[int, list[tuple[asyncio.AbstractEventLoop, Callback]]] = {}
# mailbox id -> folder id -> the highest MODSEQ handed to this process's
# subscribers, so that the same change is not handed over again when it comes
# back by Redis or the poller (each hand-over costs every session of the
# folder a read); dropped with the mailbox's last subscriber.
_dispatched: dict[int, dict[int, int]] = {}


def subscribe(mailbox_id: int, callback: Callback) -> Callable[[], None]:
    """Call ``callback`` on the caller's loop for each change of the mailbox;
    returns the function that unsubscribes."""
    entry = (asyncio.get_running_loop(), callback)
    with _lock:
        _subscribers.setdefault(mailbox_id, []).append(entry)

    def unsubscribe() -> None:
        with _lock:
            entries = _subscribers.get(mailbox_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                _subscribers.pop(mailbox_id, None)
                _dispatched.pop(mailbox_id, None)

    return unsubscribe


def dispatch_local(event: FolderChanged) -> None:
    """Hand an event to this process's subscribers (thread-safe)."""
    with _lock:
        entries = list(_subscribers.get(event.mailbox_id, ()))
        if entries:
            folders = _dispatched.setdefault(event.mailbox_id, {})
            folders[event.folder_id] = max(folders.get(event.folder_id, 0),
                                           event.highestmodseq)
    # One hand-over per event loop, not one per subscriber: each is a wake-up
    # write to the loop's self-pipe, ten thousand of them for as many idlers.
    by_loop: dict[asyncio.AbstractEventLoop, list[Callback]] = {}
    for loop, callback in entries:
        by_loop.setdefault(loop, []).append(callback)
    for loop, callbacks in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: the session is gone
            loop.call_soon_threadsafe(_call_each, callbacks, event)


def _call_each(callbacks: list[Callback], event: FolderChanged) -> None:
    for callback in callbacks:
        try:
            callback(event)
        except Exception:  # one subscriber's fault is not its neighbours'
            log.exception("change subscriber failed")


def dispatched(mailbox_id: int, folder_id: int) -> int:
    """The highest MODSEQ of the folder that this process's subscribers were
    told of (0: none): a change at or below it is news to none of them."""
    with _lock:
        return _dispatched.get(mailbox_id, {}).get(folder_id, 0)


_redis_client = None


def _redis():  # type: ignore[no-untyped-def]
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
    return _redis_client


def publish(events: list[FolderChanged]) -> None:
    """Called after commit. Local subscribers always; Redis when configured."""
    for event in events:
        dispatch_local(event)
    if settings.REDIS_URL and events:
        try:
            pipe = _redis().pipeline(transaction=False)
            name = channel()
            for event in events:
                pipe.publish(name, event.to_json())
            pipe.execute()
        except Exception:
            # Notification is best effort; the data is committed and pollers catch up.
            log.exception("could not publish folder changes to Redis")
