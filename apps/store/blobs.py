"""Content-addressed blob storage behind a small interface.

``LocalBlobStore`` keeps each message as ``ROOT/ab/cd/<sha256>``. A write goes
to a temporary file, is fsynced, renamed into place, and the directory is
fsynced, all before the caller commits the database row that references it
(DESIGN.md "Storage"). ``put_many`` does one round of fsyncs for a whole batch
(group commit). Another implementation (a shared or S3-compatible store) only
has to provide the same four methods.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

from django.conf import settings


class BlobStore(Protocol):
    def put_many(self, blobs: list[bytes]) -> list[str]: ...
    def read(self, sha256: str) -> bytes: ...
    def path(self, sha256: str) -> Path: ...
    def delete_if_older(self, sha256: str, seconds: float) -> bool: ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_many(self, blobs: list[bytes]) -> list[str]:
        """Write every blob durably; return their sha256 names."""
        names = [digest(data) for data in blobs]
        pending: list[tuple[Path, Path]] = []
        dirs: set[Path] = set()
        for name, data in zip(names, blobs, strict=True):
            final = self.path(name)
            try:
                # Reusing a blob: a fresh mtime keeps the collector's hands off it.
                os.utime(final)
                dirs.add(final.parent)
                continue
            except FileNotFoundError:
                pass
            if any(p == final for _, p in pending):
                continue
            tmp = self.tmp / f"{uuid.uuid4().hex}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            pending.append((tmp, final))
        for tmp, final in pending:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            dirs.add(final.parent)
        for directory in dirs:
            _fsync_dir(directory)
        if pending:
            # New sub-directories must be durable in their parents too.
            for directory in {d.parent for d in dirs} | {d.parent.parent for d in dirs}:
                _fsync_dir(directory)
        return names

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete_if_older(self, sha256: str, seconds: float) -> bool:
        path = self.path(sha256)
        try:
            if time.time() - path.stat().st_mtime < seconds:
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_stores: dict[Path, LocalBlobStore] = {}


def get_blob_store() -> BlobStore:
    """The configured store (read at call time, so tests can point it elsewhere)."""
    root = Path(settings.MAILHOST_STORAGE_ROOT)
    store = _stores.get(root)
    if store is None:
        store = _stores[root] = LocalBlobStore(root)
    return store
