"""Migration 0004: the uploads of unfinished import jobs, which earlier
releases kept under MAILHOST_STORAGE_ROOT/uploads/, move into the blob store."""

from __future__ import annotations

from pathlib import Path

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.store.blobs import get_blob_store
from apps.transfer.models import ImportJob
from tests.factories import make_mailbox

BEFORE = [("transfer", "0003_imap_import_job")]
AFTER = [("transfer", "0004_import_uploads_in_the_blob_store")]


def test_uploads_of_unfinished_jobs_move_into_the_blob_store(transactional_db, settings):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_job = executor.loader.project_state(BEFORE).apps.get_model("transfer", "ImportJob")
    mailbox = make_mailbox("jo@transfer.example")
    uploads = Path(settings.MAILHOST_STORAGE_ROOT) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / "waiting.mbox").write_bytes(b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nhi\n")
    (uploads / "done.mbox").write_bytes(b"left as it was")
    waiting = old_job.objects.create(mailbox_id=mailbox.pk, source="mbox file a",
                                     upload="waiting.mbox", status="queued")
    done = old_job.objects.create(mailbox_id=mailbox.pk, source="mbox file b",
                                  upload="done.mbox", status="done")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    moved = ImportJob.objects.get(pk=waiting.pk).upload
    assert get_blob_store().read(moved).startswith(b"From a@b")
    assert not (uploads / "waiting.mbox").exists()
    assert ImportJob.objects.get(pk=done.pk).upload == "done.mbox"  # ended: nothing to move
