"""Content-addressed blob storage behind a small interface.

``LocalBlobStore`` keeps each message as ``ROOT/ab/cd/<sha256>``. A write goes
to a temporary file, is fsynced, renamed into place, and the directory is
fsynced, all before the caller commits the database row that references it
(DESIGN.md "Storage"). ``put_many`` does one round of fsyncs for a whole batch
(group commit). ``apps/store/s3.py`` provides the same methods on an
S3-compatible object store (``MAILHOST_BLOB_STORE=s3://bucket/prefix``).
Readers never see a path: ``read`` and ``read_range`` serve both stores.

A process killed between the write and the commit leaves a file (or a
temporary file) that no row names: ``files_older_than`` lists them for the
collector, which removes those without a row once the grace period is past.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from django.conf import settings


class BlobStore(Protocol):
    def put_many(self, blobs: list[bytes]) -> list[str]: ...
    def read(self, sha256: str) -> bytes: ...
    def read_range(self, sha256: str, start: int, length: int) -> bytes: ...
    def exists(self, sha256: str) -> bool: ...
    def held_locally(self, sha256: str) -> bool: ...
    def read_concurrently(self, reads: Sequence[Callable[[], bytes]]) -> list[bytes]: ...
    def delete_if_older(self, sha256: str, seconds: float) -> bool: ...
    def files_older_than(self, seconds: float) -> Iterator[str]: ...
    def remove_stale_temporaries(self, seconds: float) -> int: ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = str(root)
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._tmp_prefix = str(self.tmp)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_many(self, blobs: list[bytes]) -> list[str]:
        """Write every blob durably; return their sha256 names.

        The fsyncs of a batch are issued together from a small thread pool, so
        that the filesystem can fold them into one journal commit (as jbd2 on
        ext4 does) instead of paying one commit per message. Paths are plain
        strings and each file is fsynced through the descriptor it was
        written with: pathlib, and opening each file again for its fsync,
        were about a quarter of this function's CPU time."""
        names = [digest(data) for data in blobs]
        pending: dict[str, tuple[str, int]] = {}  # final path -> temporary file, its fd
        dirs: set[str] = set()
        try:
            for name, data in zip(names, blobs, strict=True):
                directory = f"{self._prefix}/{name[:2]}/{name[2:4]}"
                final = f"{directory}/{name}"
                if final in pending:
                    continue
                try:
                    # Reusing a blob: a fresh mtime keeps the collector's hands off it.
                    os.utime(final)
                    dirs.add(directory)
                    continue
                except FileNotFoundError:
                    pass
                tmp = f"{self._tmp_prefix}/{uuid.uuid4().hex}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                pending[final] = (tmp, fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            _fsync_all([fd for _, fd in pending.values()])
        finally:
            for _, fd in pending.values():
                os.close(fd)
        created: set[str] = set()
        for final, (tmp, _) in pending.items():
            directory = final.rpartition("/")[0]
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the first blob of its directory
                created.update(_make_dirs(Path(directory), self.root))
                os.replace(tmp, final)
            dirs.add(directory)
        # A new directory must be durable in its parent as well.
        _fsync_all(sorted(dirs | {d.rpartition("/")[0] for d in created}))
        return names

    def read(self, sha256: str) -> bytes:
        # A plain string path and an unbuffered file: a third of the time of
        # pathlib's read_bytes, which a pipelined POP3 RETR of small messages felt.
        name = f"{self._prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}"
        with open(name, "rb", buffering=0) as handle:
            return handle.readall()

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """At most ``length`` bytes from offset ``start`` (fewer at the end)."""
        with open(self.path(sha256), "rb", buffering=0) as handle:
            return read_file_range(handle, start, length)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def held_locally(self, sha256: str) -> bool:
        """Whether a read is a local file's (it is, here): cheap enough for
        an event loop."""
        return True

    def read_concurrently(self, reads: Sequence[Callable[[], bytes]]) -> list[bytes]:
        """The results of ``reads`` (of this store), in order: one after the
        other here, where a read is a local file's."""
        return [read() for read in reads]

    def delete_if_older(self, sha256: str, seconds: float) -> bool:
        path = self.path(sha256)
        try:
            if time.time() - path.stat().st_mtime < seconds:
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        return True

    def files_older_than(self, seconds: float) -> Iterator[str]:
        """The sha256 names of stored files last touched more than ``seconds`` ago."""
        cutoff = time.time() - seconds
        for first in os.scandir(self.root):
            if len(first.name) != 2 or not first.is_dir():
                continue  # tmp/ and anything that is not a blob directory
            for second in os.scandir(first.path):
                for entry in os.scandir(second.path):
                    try:
                        if entry.stat().st_mtime < cutoff:
                            yield entry.name
                    except FileNotFoundError:
                        pass  # removed meanwhile

    def remove_stale_temporaries(self, seconds: float) -> int:
        """Remove temporary files older than ``seconds``: a writer killed before
        its rename leaves one, and nothing else will ever name it."""
        cutoff = time.time() - seconds
        removed = 0
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def read_file_range(handle: io.FileIO, start: int, length: int) -> bytes:
    """At most ``length`` bytes from ``start``; ``length`` may be a client's
    (IMAP partial), far past the end: read() would allocate all of it first."""
    available = os.fstat(handle.fileno()).st_size - start
    if available <= 0 or length <= 0:
        return b""
    handle.seek(start)
    return handle.read(min(length, available))


def _fsync(target: str | int) -> None:
    """fsync an open file descriptor, or a directory by its path."""
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")


def _fsync_all(targets: Sequence[str | int]) -> None:
    """fsync all ``targets`` at once: the first in this thread, the others
    beside it in the pool (a thread woken for each costs CPU)."""
    if not targets:
        return
    others = [_fsync_pool.submit(_fsync, target) for target in targets[1:]]
    try:
        _fsync(targets[0])
    finally:
        for future in others:
            future.result()


def _make_dirs(directory: Path, root: Path) -> list[str]:
    """mkdir -p below ``root``; returns the directories it created."""
    created = []
    for parent in reversed([directory, *directory.parents]):
        if parent == root or root not in parent.parents:
            continue
        try:
            parent.mkdir()
            created.append(str(parent))
        except FileExistsError:
            pass
    return created


_stores: dict[str | Path, LocalBlobStore] = {}


def get_blob_store() -> BlobStore:
    """The configured store (read at call time, so tests can point it elsewhere)."""
    if settings.MAILHOST_BLOB_STORE.startswith("s3://"):
        from apps.store import s3  # boto3 is imported only where it is used

        return s3.configured_store()
    return local_blob_store()


def local_blob_store() -> LocalBlobStore:
    """The store under ``MAILHOST_STORAGE_ROOT``, whatever store is configured
    (``manage.py migrateblobs`` moves blobs between the two)."""
    # Keyed by the setting as it is: making a Path of it on every read cost
    # more than the read of a small message.
    root = settings.MAILHOST_STORAGE_ROOT
    store = _stores.get(root)
    if store is None:
        store = _stores[root] = LocalBlobStore(Path(root))
    return store
