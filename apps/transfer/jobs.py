"""Imports started from the admin panel: the upload is kept beside the blob
store (which web processes and workers share), a row holds the job and its
progress, and a Celery task runs ``importing.import_mail`` on it, the same
service ``manage.py importmail`` runs."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.transfer import importing
from apps.transfer.models import ImportJob
from mailhost.errors import MailhostError

log = logging.getLogger(__name__)


def _uploads() -> Path:
    return Path(settings.MAILHOST_STORAGE_ROOT) / "uploads"


def start_mbox_import(mailbox: Mailbox, upload: BinaryIO, *, name: str,
                      folder: str = "INBOX") -> ImportJob:
    """Keep an uploaded mbox and queue its import into ``folder``."""
    from apps.transfer.tasks import run_import_job

    folder = store.validate_folder_name(folder)
    path = _uploads() / f"{uuid.uuid4().hex}.mbox"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        while chunk := upload.read(1 << 20):
            out.write(chunk)
    with transaction.atomic():
        job = ImportJob.objects.create(mailbox=mailbox, source=f"mbox file {name}",
                                       folder=folder, upload=path.name)
        transaction.on_commit(lambda: run_import_job.delay(job.pk))
    return job


def run_job(job_id: int) -> None:
    """Run a job that has not ended. The task is delivered again when a worker
    died in it (late acknowledgement): the import then starts over and skips
    what the first run filed, as any second import does."""
    unfinished = ImportJob.objects.filter(
        pk=job_id, status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING])
    if not unfinished.update(status=ImportJob.Status.RUNNING):
        return
    job = ImportJob.objects.select_related("mailbox").get(pk=job_id)
    path = _uploads() / job.upload
    if not path.exists():
        return  # a run that overlapped this one has finished it

    def save(state: importing.Progress) -> None:
        ImportJob.objects.filter(pk=job_id).update(
            messages_total=state.messages_total, messages_done=state.messages_done,
            copied=state.copied, skipped=state.skipped, bytes_done=state.bytes_done)

    status, detail = ImportJob.Status.DONE, ""
    try:
        result = importing.import_mail(job.mailbox, importing.MboxSource(path, folder=job.folder),
                                       progress=save)
        if result.stopped:
            status, detail = ImportJob.Status.STOPPED, result.stopped
        elif result.problems:
            detail = "; ".join(result.problems)
    except (MailhostError, OSError) as error:
        log.exception("import job %s failed", job_id)
        status, detail = ImportJob.Status.FAILED, getattr(error, "message", str(error))
    finally:
        path.unlink(missing_ok=True)
    ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(
        status=status, detail=detail, finished=timezone.now())
