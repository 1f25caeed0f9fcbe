"""Message blobs on an S3-compatible object store (``MAILHOST_BLOB_STORE=s3://bucket/prefix``).

The same contract as ``LocalBlobStore`` (apps/store/blobs.py):

- Content-addressed keys: ``<prefix>/<sha256>``. A key always names the same
  bytes, so a cached copy is never stale and a re-upload changes nothing but
  the object's LastModified.
- Durable before the commit: ``put_many`` returns once S3 has acknowledged
  every PUT (a single PUT is atomic: readers see the whole object or none),
  and callers commit the rows that reference the blobs only after that, so
  before the SMTP 250. The PUTs of a batch run concurrently on a thread pool,
  the object store's counterpart of the local store's batched fsyncs. Each
  PUT carries the sha256, which the server checks against what it received.
- Collection: an object's LastModified plays the local file's mtime. A
  delivery that reuses a blob PUTs it again, which makes it young again, before
  it commits its row; the collector deletes only objects older than the grace
  period whose rows it has just removed (or that never had one). Why a re-PUT
  and not a HEAD then a copy onto itself: the copy fails if the collector
  deleted the object between the HEAD and the copy (a retry would need the
  bytes anyway), while a PUT recreates it whatever happened before; for a
  message of a few kilobytes a PUT costs the one round trip that the copy
  would, and a HEAD first would add one to every new message, the common
  case. What stays is the window that the local store has between its stat
  and its unlink: a reuse that lands between the collector's HEAD and its
  DELETE of an object idle for the whole grace period.
- Temporaries: this store writes single PUTs and leaves no temporary behind,
  but a multipart upload that some other writer (an ``aws s3 cp`` of a large
  blob, an interrupted tool) left under the prefix holds storage until it is
  aborted: ``remove_stale_temporaries`` aborts those older than the grace.
- A read cache under ``MAILHOST_S3_CACHE_DIR``, at most ``MAILHOST_S3_CACHE_MB``:
  whole blobs, written when a blob is stored or read, evicted least recently
  used first. Ranged reads (IMAP partial FETCH, POP3 TOP, webmail previews) of
  a blob not cached are ranged GETs.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.store.blobs import digest, read_file_range

# The cache evicts down to this share of its limit, so that one eviction pass
# (a directory scan) makes room for many blobs.
_CACHE_LOW_WATER = 0.8


@dataclass(frozen=True)
class Location:
    """Where the blobs live, from ``s3://bucket/prefix``."""

    bucket: str
    prefix: str  # "" or "path/without/slashes/around"

    @classmethod
    def parse(cls, url: str) -> Location:
        if not url.startswith("s3://"):
            raise ImproperlyConfigured(f"MAILHOST_BLOB_STORE={url!r} is not s3://bucket/prefix")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ImproperlyConfigured(f"MAILHOST_BLOB_STORE={url!r} names no bucket")
        return cls(bucket, prefix.strip("/"))

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{sha256}" if self.prefix else sha256

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""


class ReadCache:
    """Whole blobs on local disk, named by sha256, at most ``limit_bytes``.

    Several processes may share the directory: files appear by rename, so a
    reader sees a whole file or none, and a hit's mtime is refreshed so that
    eviction (oldest mtime first) keeps what is read. A cache file is not
    fsynced: after a power loss a torn one fails its sha256 check and is
    fetched again."""

    def __init__(self, directory: Path, limit_bytes: int) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._estimate = sum(_sizes(directory).values())

    def path(self, sha256: str) -> str:
        return f"{self.directory}/{sha256}"

    def get(self, sha256: str) -> bytes | None:
        try:
            with open(self.path(sha256), "rb", buffering=0) as handle:
                data = handle.readall()
        except FileNotFoundError:
            return None
        if digest(data) != sha256:
            self.discard(sha256)
            return None
        _touch(self.path(sha256))
        return data

    def get_range(self, sha256: str, start: int, length: int) -> bytes | None:
        try:
            with open(self.path(sha256), "rb", buffering=0) as handle:
                data = read_file_range(handle, start, length)
        except FileNotFoundError:
            return None
        _touch(self.path(sha256))
        return data

    def put(self, sha256: str, data: bytes) -> None:
        if len(data) > self.limit_bytes // 8:
            return  # one large attachment must not flush everything else
        tmp = f"{self.directory}/.{uuid.uuid4().hex}.tmp"
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, self.path(sha256))
        with self._lock:
            self._estimate += len(data)
            if self._estimate <= self.limit_bytes:
                return
            self._estimate = self._evict()

    def discard(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(sha256))

    def _evict(self) -> int:
        """Remove least recently used files down to the low-water mark; the
        size left. Other processes' files count as well: they share the limit."""
        sizes = _sizes(self.directory)
        total = sum(sizes.values())
        by_age = sorted(sizes, key=lambda path: _mtime(path))
        for path in by_age:
            if total <= self.limit_bytes * _CACHE_LOW_WATER:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= sizes[path]
        return total


def _sizes(directory: Path) -> dict[str, int]:
    sizes = {}
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):  # evicted by another process
            sizes[entry.path] = entry.stat().st_size
    return sizes


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _touch(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


class S3BlobStore:
    def __init__(self, client: object, location: Location, cache: ReadCache,
                 pool: ThreadPoolExecutor) -> None:
        self.client = client
        self.location = location
        self.cache = cache
        self._pool = pool

    def put_many(self, blobs: list[bytes]) -> list[str]:
        """Upload every blob; return their sha256 names once S3 holds them all."""
        names = [digest(data) for data in blobs]
        unique = dict(zip(names, blobs, strict=True))
        if len(unique) == 1:
            self._put(*next(iter(unique.items())))
        else:
            list(self._pool.map(self._put, unique.keys(), unique.values()))
        return names

    def _put(self, sha256: str, data: bytes) -> None:
        # Also for a blob already stored: the PUT makes it young for the
        # collector (see the module's docstring).
        try:
            self.client.put_object(
                Bucket=self.location.bucket, Key=self.location.key(sha256), Body=data,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode())
        except (BotoCoreError, ClientError) as error:
            raise OSError(f"S3 PUT of blob {sha256} failed: {error}") from error
        self.cache.put(sha256, data)

    def read(self, sha256: str) -> bytes:
        data = self.cache.get(sha256)
        if data is not None:
            return data
        data = self._get(sha256)
        if digest(data) != sha256:
            raise OSError(f"blob {sha256} read back from S3 with other bytes")
        self.cache.put(sha256, data)
        return data

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """At most ``length`` bytes from offset ``start`` (fewer at the end)."""
        if length <= 0:
            return b""
        data = self.cache.get_range(sha256, start, length)
        if data is not None:
            return data
        return self._get(sha256, f"bytes={start}-{start + length - 1}")

    def _get(self, sha256: str, byte_range: str = "") -> bytes:
        """The object's bytes (a range of them); a failure is an OSError, as
        a local file's would be, which the readers answer for."""
        extra = {"Range": byte_range} if byte_range else {}
        try:
            response = self.client.get_object(
                Bucket=self.location.bucket, Key=self.location.key(sha256), **extra)
            return response["Body"].read()
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(f"blob {sha256} is not in the store") from None
            if byte_range and error.response["Error"]["Code"] == "InvalidRange":
                return b""  # RFC 9110 §14.1.2: the range starts past the end
            raise OSError(f"S3 GET of blob {sha256} failed: {error}") from error
        except BotoCoreError as error:
            raise OSError(f"S3 GET of blob {sha256} failed: {error}") from error

    def _last_modified(self, sha256: str) -> datetime | None:
        try:
            head = self.client.head_object(
                Bucket=self.location.bucket, Key=self.location.key(sha256))
        except ClientError as error:
            if _missing(error):
                return None
            raise OSError(f"S3 HEAD of blob {sha256} failed: {error}") from error
        except BotoCoreError as error:
            raise OSError(f"S3 HEAD of blob {sha256} failed: {error}") from error
        return head["LastModified"]

    def exists(self, sha256: str) -> bool:
        return self._last_modified(sha256) is not None

    def held_locally(self, sha256: str) -> bool:
        """Whether a read is served by the cache, not a GET that an event
        loop must not wait for."""
        return os.path.exists(self.cache.path(sha256))

    def read_concurrently(self, reads: Sequence[Callable[[], bytes]]) -> list[bytes]:
        """The results of ``reads`` (of this store), in order, overlapping on
        the thread pool: a FETCH or a POP3 login that reads many blobs not
        cached waits for about one GET's round trip per pool's worth, not one
        per blob."""
        if len(reads) < 2:
            return [read() for read in reads]
        return list(self._pool.map(_call, reads))

    def delete_if_older(self, sha256: str, seconds: float) -> bool:
        modified = self._last_modified(sha256)
        if modified is not None:
            if time.time() - modified.timestamp() < seconds:
                return False
            self.client.delete_object(
                Bucket=self.location.bucket, Key=self.location.key(sha256))
        self.cache.discard(sha256)
        return True

    def files_older_than(self, seconds: float) -> Iterator[str]:
        """The sha256 names of stored objects last written more than ``seconds`` ago."""
        cutoff = time.time() - seconds
        prefix = self.location.key_prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                name = item["Key"].removeprefix(prefix)
                if "/" not in name and item["LastModified"].timestamp() < cutoff:
                    yield name

    def remove_stale_temporaries(self, seconds: float) -> int:
        """Abort multipart uploads under the prefix started more than
        ``seconds`` ago: their parts hold storage that no object names."""
        cutoff = time.time() - seconds
        removed = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.location.bucket, Prefix=self.location.key_prefix)
        for page in pages:
            for upload in page.get("Uploads", ()):
                if upload["Initiated"].timestamp() < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.location.bucket, Key=upload["Key"],
                        UploadId=upload["UploadId"])
                    removed += 1
        return removed


def _call(read: Callable[[], bytes]) -> bytes:
    return read()


def _missing(error: ClientError) -> bool:
    return error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}


# One client and one upload pool per endpoint and credentials: a boto3 client
# takes a tenth of a second to build, and it is safe to share between threads.
_clients: dict[tuple, object] = {}
_pools: dict[int, ThreadPoolExecutor] = {}
_stores: dict[tuple, S3BlobStore] = {}
_build_lock = threading.Lock()


def configured_store() -> S3BlobStore:
    """The store the settings name (read at call time, so tests can point it elsewhere)."""
    key = (settings.MAILHOST_BLOB_STORE, settings.MAILHOST_S3_ENDPOINT,
           settings.MAILHOST_S3_CACHE_DIR)
    store = _stores.get(key)
    if store is None:
        with _build_lock:
            store = _stores.get(key) or _build(key)
            _stores[key] = store
    return store


def _build(key: tuple) -> S3BlobStore:
    threads = settings.MAILHOST_S3_UPLOAD_THREADS
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="s3-put")
    return S3BlobStore(
        _client(threads), Location.parse(settings.MAILHOST_BLOB_STORE),
        ReadCache(Path(settings.MAILHOST_S3_CACHE_DIR),
                  settings.MAILHOST_S3_CACHE_MB * 1024 * 1024),
        pool)


def _client(threads: int) -> object:
    endpoint = settings.MAILHOST_S3_ENDPOINT or None
    path_style = settings.MAILHOST_S3_PATH_STYLE
    if path_style is None:
        path_style = endpoint is not None  # self-hosted stores rarely have bucket DNS names
    key = (endpoint, settings.MAILHOST_S3_REGION, path_style,
           settings.MAILHOST_S3_ACCESS_KEY_ID, settings.MAILHOST_S3_SECRET_ACCESS_KEY)
    client = _clients.get(key)
    if client is None:
        credentials = {}
        if settings.MAILHOST_S3_ACCESS_KEY_ID:  # else boto3's own chain (instance roles …)
            credentials = {"aws_access_key_id": settings.MAILHOST_S3_ACCESS_KEY_ID,
                           "aws_secret_access_key": settings.MAILHOST_S3_SECRET_ACCESS_KEY}
        client = _clients[key] = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=settings.MAILHOST_S3_REGION,
            config=Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                max_pool_connections=max(threads, 10),
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10, read_timeout=60),
            **credentials)
    return client

