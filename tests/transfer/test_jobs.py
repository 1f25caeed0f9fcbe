"""The panel's import jobs as the worker runs them (apps/transfer/jobs.py):
a task delivered again after its worker died finishes the job without
filing anything twice; one delivered after the job ended does nothing."""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.store.models import Message
from apps.transfer import jobs
from apps.transfer.formats import mbox_entry
from apps.transfer.models import ImportJob
from apps.transfer.tasks import run_import_job
from tests.factories import make_mailbox
from tests.transfer.test_files import SAMPLES, corpus_message


def test_a_job_redelivered_after_its_worker_died_files_each_message_once(
        db, django_capture_on_commit_callbacks):
    fay = make_mailbox("fay@transfer.example")
    mbox = b"".join(mbox_entry(corpus_message(name), datetime(2020, 1, 1, tzinfo=UTC))
                    for name in SAMPLES)
    with django_capture_on_commit_callbacks() as queued:
        job = jobs.start_mbox_import(fay, io.BytesIO(mbox), name="a.mbox", folder="Old")
    assert len(queued) == 1  # the task, enqueued once the job row is committed
    # A first run filed the first two messages, then its worker was killed.
    head = b"".join(mbox_entry(corpus_message(name), datetime(2020, 1, 1, tzinfo=UTC))
                    for name in SAMPLES[:2])
    first = jobs.start_mbox_import(fay, io.BytesIO(head), name="head.mbox", folder="Old")
    run_import_job(first.pk)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING)

    run_import_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.messages_done, job.copied, job.skipped) == ("done", 5, 3, 2)
    assert Message.objects.filter(folder__mailbox=fay, folder__name="Old").count() == 5

    run_import_job(job.pk)  # delivered once more: the job has ended
    job.refresh_from_db()
    assert (job.status, job.copied) == ("done", 3)
    assert Message.objects.filter(folder__mailbox=fay).count() == 5


def test_a_cancelled_job_leaves_nothing_behind(db):
    gil = make_mailbox("gil@transfer.example")
    mbox = b"".join(mbox_entry(corpus_message(name), datetime(2020, 1, 1, tzinfo=UTC))
                    for name in SAMPLES)
    job = jobs.start_mbox_import(gil, io.BytesIO(mbox), name="a.mbox")
    assert get_blob_store().read(job.upload) == mbox
    assert jobs.cancel(job)
    assert not get_blob_store().exists(job.upload)
    run_import_job(job.pk)  # its task, delivered after all
    job.refresh_from_db()
    assert (job.status, job.copied) == ("cancelled", 0)
    assert not Message.objects.filter(folder__mailbox=gil).exists()
    assert not jobs.cancel(job)  # it has ended


def _mbox() -> bytes:
    return b"".join(mbox_entry(corpus_message(name), datetime(2020, 1, 1, tzinfo=UTC))
                    for name in SAMPLES)


def _node(settings, data_dir: Path) -> None:
    """This process now plays the node whose data directory is ``data_dir``."""
    settings.MAILHOST_STORAGE_ROOT = data_dir / "messages"
    settings.MAILHOST_S3_CACHE_DIR = data_dir / "blob-cache"


def test_an_upload_made_on_one_node_is_imported_by_a_worker_on_another(
        db, s3_store, settings, tmp_path):
    hal = make_mailbox("hal@transfer.example")
    _node(settings, tmp_path / "node-a")
    job = jobs.start_mbox_import(hal, io.BytesIO(_mbox()), name="a.mbox", folder="Old")
    shutil.rmtree(tmp_path / "node-a")  # nothing of node A's disk is needed

    _node(settings, tmp_path / "node-b")
    run_import_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.copied) == ("done", 5)
    filed = Message.objects.filter(folder__mailbox=hal, folder__name="Old").order_by("uid")
    assert [get_blob_store().read(m.blob_id) for m in filed] == [
        corpus_message(name) for name in SAMPLES]
    # The upload is gone from the bucket (listed past any cache).
    assert job.upload not in set(get_blob_store().files_older_than(-3600))


@pytest.mark.parametrize("blob_store", ["local", "s3"])
def test_the_collector_spares_the_upload_of_an_unfinished_job(db, blob_store, request):
    if blob_store == "s3":
        request.getfixturevalue("s3_store")
    ida = make_mailbox("ida@transfer.example")
    job = jobs.start_mbox_import(ida, io.BytesIO(_mbox()), name="a.mbox")
    twin = jobs.start_mbox_import(ida, io.BytesIO(_mbox()), name="again.mbox")
    assert twin.upload == job.upload  # the same bytes are one blob
    blobs = get_blob_store()
    store.collect_garbage(grace_seconds=0)
    assert blobs.exists(job.upload)  # both jobs wait

    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.INTERRUPTED)
    assert jobs.cancel(twin)
    store.collect_garbage(grace_seconds=0)
    assert blobs.exists(job.upload)  # the interrupted job may be resumed

    ImportJob.objects.filter(pk=job.pk).delete()  # its mailbox was removed, say
    store.collect_garbage(grace_seconds=0)
    assert not blobs.exists(job.upload)
