"""Change notifications: "folder F of mailbox M changed, now at MODSEQ N".

Store services publish after their transaction commits. Subscribers in the
same process (IMAP IDLE sessions) are called on their own event loop. The
event also goes to the other processes: with REDIS_URL set over Redis pub/sub,
so that listener processes on other hosts hear it; without Redis (the embedded
default, one host) as a datagram to each listener process's Unix socket under
the data directory (``PeerNotices``), so that the worker's filings and the
other listener processes' changes reach IDLE sessions at once with no server
to run. Both are best effort: the data is committed, and a process that missed
a notice finds the change by comparing HIGHESTMODSEQ (the IMAP server's
poller), only later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

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


def dispatch_if_news(event: FolderChanged) -> None:
    """Hand over an event heard from another process unless this process's
    subscribers were told of the change already (their own, or an earlier
    notice): each hand-over costs every session of the folder a read."""
    if event.highestmodseq > dispatched(event.mailbox_id, event.folder_id):
        dispatch_local(event)


# A datagram carries at most this many events (a few KiB; Linux's limit for a
# Unix datagram is the socket's send buffer, about 200 KiB).
_EVENTS_PER_NOTICE = 500


class PeerNotices:
    """Folder changes between the processes of one host without a server: each
    listener process that serves IMAP binds a Unix datagram socket named after
    its pid in a directory of the installation's database (``directory``),
    and every process that commits a change sends it to each socket there but
    its own. A socket nobody holds any more (its process was killed) is
    removed by the first sender that finds it so; a full receive queue drops
    the notice, which the poller then makes up for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._listening: socket.socket | None = None
        self._own: str | None = None
        # directory -> (its mtime when listed, the sockets in it)
        self._peers: dict[Path, tuple[int, list[str]]] = {}

    @staticmethod
    def directory() -> Path:
        """Named after the database, as the Redis channel is (``channel``):
        installations or test runs that share a data directory but not a
        database do not hear each other (a foreign MODSEQ would hide their own
        changes from ``dispatched``)."""
        identity = "|".join(str(connection.settings_dict.get(key) or "")
                            for key in ("ENGINE", "HOST", "PORT", "NAME"))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return Path(settings.DATA_DIR) / "folder-changes" / digest

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind this process's socket and hand what arrives to this process's
        subscribers, read on ``loop``. Without a socket (a data directory
        whose path is too long for one, say) the poller alone tells."""
        directory = self.directory()
        path = str(directory / str(os.getpid()))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by an earlier process with this pid
            sock.bind(path)
        except OSError:
            sock.close()
            log.exception("cannot bind %s: other processes' folder changes come "
                          "by the poller only", path)
            return
        sock.setblocking(False)
        self._listening, self._own = sock, path
        loop.add_reader(sock.fileno(), self._receive)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._listening is None:
            return
        loop.remove_reader(self._listening.fileno())
        self._listening.close()
        with contextlib.suppress(OSError):
            os.unlink(self._own or "")
        self._listening = self._own = None

    def _receive(self) -> None:
        assert self._listening is not None
        while True:
            try:
                raw = self._listening.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            try:
                changes = [FolderChanged(*map(int, triple)) for triple in json.loads(raw)]
            except (ValueError, TypeError):
                log.warning("ignored a malformed folder-change notice")
                continue
            for event in changes:
                dispatch_if_news(event)

    def _peer_paths(self) -> list[str]:
        directory = self.directory()
        try:
            mtime = directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        with self._lock:
            cached = self._peers.get(directory)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        with contextlib.suppress(FileNotFoundError):
            paths = [entry.path for entry in os.scandir(directory)]
            with self._lock:
                self._peers[directory] = (mtime, paths)
            return paths
        return []

    def send(self, events: list[FolderChanged]) -> None:
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            sender = self._sender
        notices = [json.dumps([[e.mailbox_id, e.folder_id, e.highestmodseq]
                               for e in events[start:start + _EVENTS_PER_NOTICE]]).encode()
                   for start in range(0, len(events), _EVENTS_PER_NOTICE)]
        for path in self._peer_paths():
            if path == self._own:
                continue
            for notice in notices:
                try:
                    sender.sendto(notice, path)
                except ConnectionRefusedError:  # its process is gone
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    break
                except (BlockingIOError, FileNotFoundError):
                    break  # a full queue, or gone meanwhile: the poller catches up


peer_notices = PeerNotices()


def publish(events: list[FolderChanged]) -> None:
    """Called after commit. Local subscribers always; then the other
    processes, over Redis when configured, else over ``peer_notices``."""
    for event in events:
        dispatch_local(event)
    if events and not settings.REDIS_URL:
        try:
            peer_notices.send(events)
        except Exception:
            # Best effort, as over Redis: the data is committed, pollers catch up.
            log.exception("could not tell other processes of folder changes")
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
