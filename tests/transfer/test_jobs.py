"""The panel's import jobs as the worker runs them (apps/transfer/jobs.py):
a task delivered again after its worker died finishes the job without
filing anything twice; one delivered after the job ended does nothing."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

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


def test_a_cancelled_job_leaves_nothing_behind(db, settings):
    gil = make_mailbox("gil@transfer.example")
    mbox = b"".join(mbox_entry(corpus_message(name), datetime(2020, 1, 1, tzinfo=UTC))
                    for name in SAMPLES)
    job = jobs.start_mbox_import(gil, io.BytesIO(mbox), name="a.mbox")
    uploads = Path(settings.MAILHOST_STORAGE_ROOT) / "uploads"
    assert (uploads / job.upload).exists()
    assert jobs.cancel(job)
    assert not (uploads / job.upload).exists()
    run_import_job(job.pk)  # its task, delivered after all
    job.refresh_from_db()
    assert (job.status, job.copied) == ("cancelled", 0)
    assert not Message.objects.filter(folder__mailbox=gil).exists()
    assert not jobs.cancel(job)  # it has ended
