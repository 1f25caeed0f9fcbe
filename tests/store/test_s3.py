"""The S3 blob store (apps/store/s3.py) against a real S3 server: SeaweedFS,
started by the ``s3_settings`` fixture (tests/s3_server.py). No mock: every
PUT, ranged GET, listing and multipart upload here crosses HTTP to it."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.store import services as store
from apps.store.blobs import digest, get_blob_store
from apps.store.models import Blob, Flag
from apps.store.s3 import Location, S3BlobStore
from tests.factories import make_mailbox

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
           b"Subject: stored on S3\r\n\r\n" + b"Hello from the object store.\r\n" * 40)


def _age_past(grace_seconds: float) -> None:
    """Wait until what was written so far is older than the grace period: S3
    cannot be told an object's LastModified, and it counts in whole seconds."""
    time.sleep(grace_seconds + 1.1)


def _objects(store_: S3BlobStore) -> set[str]:
    return set(store_.files_older_than(-3600))


def _cache_bytes(store_: S3BlobStore) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(store_.cache.directory))


def test_location_is_parsed_from_the_setting():
    assert Location.parse("s3://mail/blobs/") == Location("mail", "blobs")
    assert Location.parse("s3://mail").key("ab12") == "ab12"
    assert Location.parse("s3://mail/a/b").key("ab12") == "a/b/ab12"
    with pytest.raises(ImproperlyConfigured):
        Location.parse("s3:///prefix")


def test_put_many_stores_each_blob_once_under_its_sha256(s3_store: S3BlobStore):
    blobs = [MESSAGE, MESSAGE + b"second", MESSAGE]
    names = s3_store.put_many(blobs)
    assert names == [digest(data) for data in blobs]
    assert _objects(s3_store) == set(names)
    # What the server holds, fetched past our cache.
    raw = s3_store.client.get_object(Bucket=s3_store.location.bucket,
                                     Key=s3_store.location.key(names[1]))["Body"].read()
    assert raw == MESSAGE + b"second"
    assert s3_store.exists(names[0]) and not s3_store.exists(digest(b"never stored"))


def test_a_batch_is_uploaded_concurrently(s3_store: S3BlobStore, monkeypatch):
    """The PUTs of a batch overlap (the thread pool), the object store's
    counterpart of the local store's one round of fsyncs."""
    in_flight = 0
    most = 0
    lock = threading.Lock()
    put = s3_store._put

    def counted(sha256: str, data: bytes) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            time.sleep(0.2)  # long enough for the others to start: no speed is asserted
            put(sha256, data)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(s3_store, "_put", counted)
    names = s3_store.put_many([MESSAGE + bytes([n]) for n in range(8)])
    assert most > 1
    assert all(s3_store.read(name) == MESSAGE + bytes([n]) for n, name in enumerate(names))


def test_reads_whole_and_ranged_from_the_server_and_from_the_cache(s3_store: S3BlobStore):
    (name,) = s3_store.put_many([MESSAGE])
    for cached in (True, False):
        if not cached:
            s3_store.cache.discard(name)
        assert s3_store.read_range(name, 0, 4) == b"From"
        assert s3_store.read_range(name, 10, 20) == MESSAGE[10:30]
        assert s3_store.read_range(name, len(MESSAGE) - 3, 100) == MESSAGE[-3:]
        assert s3_store.read_range(name, len(MESSAGE) + 5, 10) == b""
        assert s3_store.read_range(name, 3, 0) == b""
    assert s3_store.read(name) == MESSAGE  # a miss: fetched, verified, cached
    assert (s3_store.cache.directory / name).read_bytes() == MESSAGE
    with pytest.raises(FileNotFoundError):
        s3_store.read(digest(b"never stored"))
    with pytest.raises(FileNotFoundError):
        s3_store.read_range(digest(b"never stored"), 0, 10)


def test_a_torn_cache_file_is_fetched_again(s3_store: S3BlobStore):
    (name,) = s3_store.put_many([MESSAGE])
    (s3_store.cache.directory / name).write_bytes(MESSAGE[:50])  # as after a power loss
    assert s3_store.read(name) == MESSAGE
    assert (s3_store.cache.directory / name).read_bytes() == MESSAGE


def test_the_read_cache_keeps_under_its_size_limit_and_keeps_what_is_read(
        s3_store: S3BlobStore, settings, tmp_path: Path):
    settings.MAILHOST_S3_CACHE_MB = 1
    settings.MAILHOST_S3_CACHE_DIR = str(tmp_path / "small-cache")
    small = get_blob_store()
    assert isinstance(small, S3BlobStore) and small.cache.limit_bytes == 1024 * 1024
    blobs = [os.urandom(100_000) for _ in range(30)]
    (first,) = small.put_many(blobs[:1])
    for data in blobs[1:]:
        small.put_many([data])
        small.read(first)  # read again and again: the least recently used go first
        time.sleep(0.01)  # distinct mtimes on a coarse clock
        assert _cache_bytes(small) <= 1024 * 1024
    assert (small.cache.directory / first).exists()
    assert len(list(small.cache.directory.iterdir())) < len(blobs)
    # Evicted blobs are read from the server.
    assert [small.read(digest(data)) for data in blobs] == blobs
    huge = os.urandom(200_000)  # over an eighth of the limit: not cached at all
    (huge_name,) = small.put_many([huge])
    assert small.read(huge_name) == huge and not (small.cache.directory / huge_name).exists()


@pytest.mark.django_db
def test_garbage_collection_removes_only_unreferenced_old_blobs(s3_store: S3BlobStore):
    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE)
    (gone,) = store.deliver([mailbox], MESSAGE + b"gone")
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [gone.uid], mode="add", flags=Flag.DELETED)
    store.expunge(inbox)
    Blob.objects.update(created=LONG_AGO)
    assert store.collect_garbage(grace_seconds=3600) == 0  # the object is too young
    _age_past(1)
    assert store.collect_garbage(grace_seconds=1) == 1
    assert not s3_store.exists(gone.blob_id)
    with pytest.raises(FileNotFoundError):
        s3_store.read(gone.blob_id)  # not from the cache either
    (kept,) = Blob.objects.all()
    assert s3_store.read(kept.sha256) == MESSAGE


REUSE_GRACE = 4


@pytest.mark.django_db
def test_garbage_collection_spares_an_old_blob_that_a_delivery_is_reusing(s3_store: S3BlobStore):
    """A delivery of the same bytes writes the blob again before it commits:
    the collector, which has just removed the unreferenced row, finds the
    object young and leaves it for the commit that follows. (A grace of a few
    seconds: on a loaded machine a second can pass between the write and the
    collector's look at the object.)"""
    mailbox = make_mailbox()
    (message,) = store.deliver([mailbox], MESSAGE)
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [message.uid], mode="add", flags=Flag.DELETED)
    store.expunge(inbox)
    Blob.objects.update(created=LONG_AGO)
    _age_past(REUSE_GRACE)
    s3_store.put_many([MESSAGE])  # the reusing delivery's write, its commit still to come
    assert store.collect_garbage(grace_seconds=REUSE_GRACE) == 0
    (again,) = store.deliver([mailbox], MESSAGE)
    assert again.blob_id == message.blob_id and s3_store.read(again.blob_id) == MESSAGE
    # Without that write the same collection removes it: the test can fail.
    store.set_flags(inbox, [again.uid], mode="add", flags=Flag.DELETED)
    store.expunge(inbox)
    Blob.objects.update(created=LONG_AGO)
    _age_past(REUSE_GRACE)
    assert store.collect_garbage(grace_seconds=REUSE_GRACE) == 1
    assert not s3_store.exists(message.blob_id)


@pytest.mark.django_db
def test_garbage_collection_removes_objects_and_uploads_left_by_a_killed_writer(
        s3_store: S3BlobStore):
    """A process killed between the PUT and the commit of its row leaves an
    object no row names; an interrupted multipart upload leaves parts. Both
    go once older than the grace; a young one may still get its commit."""
    mailbox = make_mailbox()
    (kept,) = store.deliver([mailbox], MESSAGE)
    (orphan,) = s3_store.put_many([MESSAGE + b"never committed"])
    bucket, key = s3_store.location.bucket, s3_store.location.key("upload-in-progress")
    upload = s3_store.client.create_multipart_upload(Bucket=bucket, Key=key)
    s3_store.client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                PartNumber=1, Body=b"half a message")
    assert store.collect_garbage(grace_seconds=3600) == 0
    _age_past(1)
    assert store.collect_garbage(grace_seconds=1) == 2
    assert not s3_store.exists(orphan)
    uploads = s3_store.client.list_multipart_uploads(
        Bucket=bucket, Prefix=s3_store.location.key_prefix)
    assert not uploads.get("Uploads")
    assert s3_store.read(kept.blob_id) == MESSAGE


@pytest.mark.django_db(transaction=True)
def test_concurrent_reuse_and_collection_lose_no_delivered_message(s3_store: S3BlobStore):
    """Deliveries of the same bytes again and again, each expunged at once,
    while the collector runs in a loop with a two-second grace: every message
    that a delivery returned is readable when it returns. (S3 keeps an object's
    Last-Modified in whole seconds, so a one-second grace could take a
    just-written object for an old one; a real grace is a day.)"""
    mailbox = make_mailbox()
    inbox = store.get_folder(mailbox, "INBOX")
    stop = threading.Event()
    collected = []

    def collector() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                Blob.objects.update(created=LONG_AGO)
                collected.append(store.collect_garbage(grace_seconds=2))
        finally:
            connection.close()

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        deadline = time.monotonic() + 8
        rounds = 0
        while time.monotonic() < deadline or rounds < 3:
            (message,) = store.deliver([mailbox], MESSAGE)
            s3_store.cache.discard(message.blob_id)
            assert s3_store.read(message.blob_id) == MESSAGE  # from the server
            store.set_flags(inbox, [message.uid], mode="add", flags=Flag.DELETED)
            store.expunge(inbox)
            rounds += 1
            # Idle past the grace now and then, so that the collector finds
            # the object old and the next delivery reuses one it may remove.
            time.sleep(4.1 if rounds % 2 else 0.3)
    finally:
        stop.set()
        thread.join(60)
    assert collected  # the collector did run alongside


def test_an_unreachable_store_fails_as_a_disk_would(s3_store: S3BlobStore, tmp_path: Path):
    """An OSError, which every reader answers with its protocol's temporary
    failure (and a writer before any 250), not a library's own exception."""
    import boto3
    from botocore.config import Config

    from apps.store.s3 import ReadCache
    from tests.s3_server import _free_ports

    (port,) = _free_ports(1)  # nothing listens there
    client = boto3.session.Session().client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    down = S3BlobStore(client, s3_store.location, ReadCache(tmp_path / "cache", 1 << 20),
                       s3_store._pool)
    for call in (lambda: down.put_many([MESSAGE]), lambda: down.read(digest(MESSAGE)),
                 lambda: down.read_range(digest(MESSAGE), 0, 10),
                 lambda: down.exists(digest(MESSAGE))):
        with pytest.raises(OSError, match=r"S3 \w+ of blob \w+ failed"):
            call()
