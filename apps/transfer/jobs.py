"""Imports started from the admin panel: an uploaded mbox (kept in the blob
store, which every node's web processes and workers share, so that a worker
on another node than the upload's reads it) or a remote IMAP account.
A row holds the job and its progress, and a Celery task runs
``importing.import_mail`` on it, the same service ``manage.py importmail``
runs.

The remote IMAP password is never stored in clear: the job row keeps it
encrypted with a key derived from SECRET_KEY (the Celery task carries only
the job's id), and it is wiped when the job ends. A job whose worker died
(no progress for MAILHOST_IMPORT_STALE_SECONDS) is marked interrupted and
keeps it until it is resumed or cancelled; the resumed run copies only what
is missing, as any second import does."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from imapclient import exceptions as imap_errors

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.transfer import importing
from apps.transfer.models import ImportJob
from mailhost.errors import Invalid, MailhostError
from mailhost.sealing import InvalidToken, seal, unseal

log = logging.getLogger(__name__)
# The sealing purpose of the remote password (mailhost/sealing.py).
_SEALED_PASSWORD = b"mailhost import job password"


def _copy_upload(sha256: str, into: IO[bytes]) -> None:
    """The upload's bytes into a local file, a range at a time (a cache for
    this run: MboxSource reads a file twice)."""
    blobs, offset, check = get_blob_store(), 0, hashlib.sha256()
    while chunk := blobs.read_range(sha256, offset, 1 << 20):
        into.write(chunk)
        check.update(chunk)
        offset += len(chunk)
    into.flush()
    if check.hexdigest() != sha256:
        raise OSError(f"the upload {sha256} was read back with other bytes")


def _enqueue(job_id: int) -> None:
    from apps.transfer.tasks import run_import_job  # the task module imports this one

    run_import_job.delay(job_id)


def start_mbox_import(mailbox: Mailbox, upload: BinaryIO, *, name: str,
                      folder: str = "INBOX") -> ImportJob:
    """Keep an uploaded mbox and queue its import into ``folder``."""
    folder = store.validate_folder_name(folder)
    # Stored before the row that names it is committed, as a message is.
    [sha256] = get_blob_store().put_many([upload.read()])
    with transaction.atomic():
        job = ImportJob.objects.create(mailbox=mailbox, source=f"mbox file {name}",
                                       folder=folder, upload=sha256)
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def start_imap_import(mailbox: Mailbox, *, host: str, port: int | None, tls: str, user: str,
                      password: str, verify_certificate: bool = True) -> ImportJob:
    """Queue the import of every folder of a remote IMAP account."""
    if tls not in importing.IMAP_PORTS:
        raise Invalid(f"{tls!r} is not one of {', '.join(importing.IMAP_PORTS)}",
                      field="tls")
    port = port or importing.IMAP_PORTS[tls]
    with transaction.atomic():
        job = ImportJob.objects.create(
            mailbox=mailbox, source=importing.imap_label(host, port, user), folder="",
            imap_host=host, imap_port=port, imap_tls=tls, imap_user=user,
            imap_verify_certificate=verify_certificate,
            imap_secret=seal(_SEALED_PASSWORD, password))
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def latest_jobs(mailbox: Mailbox, *, now: datetime | None = None) -> list[ImportJob]:
    """The mailbox's latest jobs, those whose worker died marked interrupted."""
    mark_stale(now=now)
    return list(ImportJob.objects.filter(mailbox=mailbox)[:5])


def mark_stale(*, now: datetime | None = None) -> int:
    """Running jobs without progress for MAILHOST_IMPORT_STALE_SECONDS: their
    worker died (a running import reports after every batch)."""
    limit = (now or timezone.now()) - timedelta(seconds=settings.MAILHOST_IMPORT_STALE_SECONDS)
    return ImportJob.objects.filter(status=ImportJob.Status.RUNNING,
                                    heartbeat__lt=limit).update(
        status=ImportJob.Status.INTERRUPTED,
        detail="the worker stopped answering; resume to copy what is missing")


def cancel(job: ImportJob) -> bool:
    """Stop a job: at once if it waits, after the batch being filed if it
    runs (what was filed stays; its worker removes the upload). Its password
    is wiped."""
    ended = {"status": ImportJob.Status.CANCELLED, "imap_secret": "", "detail": "cancelled",
             "finished": timezone.now()}
    if ImportJob.objects.filter(pk=job.pk, status__in=[
            ImportJob.Status.QUEUED, ImportJob.Status.INTERRUPTED]).update(**ended):
        if job.upload:  # no worker has it: its task, when it comes, does nothing
            store.discard_held_blob(job.upload)
        return True
    return bool(ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING)
                .update(**ended))


def resume(job: ImportJob) -> bool:
    """Queue an interrupted job again."""
    with transaction.atomic():
        if not ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.INTERRUPTED).update(
                status=ImportJob.Status.QUEUED, detail=""):
            return False
        transaction.on_commit(lambda: _enqueue(job.pk))
    return True


class _Ended(Exception):
    """The job was cancelled or marked interrupted while it ran."""


def run_job(job_id: int) -> None:
    """Run a job that has not ended. The task is delivered again when a worker
    died in it (late acknowledgement): the import then starts over and skips
    what the first run filed, as any second import does."""
    now = timezone.now()
    unfinished = ImportJob.objects.filter(
        pk=job_id, status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING])
    if not unfinished.update(status=ImportJob.Status.RUNNING, started=now, heartbeat=now,
                             finished=None):
        return
    job = ImportJob.objects.select_related("mailbox").get(pk=job_id)
    if job.upload and not get_blob_store().exists(job.upload):
        return  # a run that overlapped this one has finished it
    if job.upload:
        with tempfile.NamedTemporaryFile(suffix=".mbox") as local_copy:
            status, detail = _run(job, local_copy)
    else:
        status, detail = _run(job, None)
    if status is not None:
        ended = {"status": status, "detail": detail, "finished": timezone.now()}
        if status != ImportJob.Status.INTERRUPTED:
            ended["imap_secret"] = ""
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(**ended)
    if job.upload:
        # Gone once the job has ended or was cancelled; kept while it is
        # marked interrupted (this worker was taken for dead), for the resumed
        # run: the holder check (ImportJob.held_uploads) tells them apart.
        store.discard_held_blob(job.upload)


def _run(job: ImportJob,
         local_copy: IO[bytes] | None) -> tuple[ImportJob.Status | None, str]:
    """Import what the job names (its upload through ``local_copy``, an empty
    local file); its ending status and why (no status when it was cancelled
    or marked interrupted meanwhile)."""
    job_id = job.pk

    def save(state: importing.Progress) -> None:
        if not ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(
                messages_total=state.messages_total, messages_done=state.messages_done,
                copied=state.copied, skipped=state.skipped, bytes_done=state.bytes_done,
                current_folder=state.folder, heartbeat=timezone.now()):
            raise _Ended

    status, detail = ImportJob.Status.DONE, ""
    source: importing.Source | None = None
    try:
        if local_copy is None:
            source = _source(job)
        else:
            _copy_upload(job.upload, local_copy)
            source = importing.MboxSource(Path(local_copy.name), folder=job.folder)
        result = importing.import_mail(job.mailbox, source, progress=save)
        if result.stopped:
            status, detail = ImportJob.Status.STOPPED, result.stopped
        elif result.problems:
            detail = "; ".join(result.problems)
    except _Ended:
        return None, ""
    except MailhostError as error:
        log.info("import job %s failed: %s", job_id, error.message)
        status, detail = ImportJob.Status.FAILED, error.message
    except (OSError, imap_errors.IMAPClientError) as error:
        log.exception("import job %s broke", job_id)
        if local_copy is not None:
            status, detail = ImportJob.Status.FAILED, str(error)
        else:  # the remote went away mid-run: what is missing can be copied later
            status = ImportJob.Status.INTERRUPTED
            detail = f"the connection broke ({error}); resume to copy what is missing"
    finally:
        if isinstance(source, importing.ImapSource):
            source.close()
    return status, detail


def _source(job: ImportJob) -> importing.ImapSource:
    try:
        password = unseal(_SEALED_PASSWORD, job.imap_secret)
    except InvalidToken:
        raise Invalid("the stored password cannot be read (SECRET_KEY changed?); "
                      "start the import again") from None
    return importing.ImapSource(job.imap_host, job.imap_port or 0, job.imap_user, password,
                                tls=job.imap_tls,
                                verify_certificate=job.imap_verify_certificate)
