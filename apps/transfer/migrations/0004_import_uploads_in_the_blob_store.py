"""Uploads of unfinished import jobs move from MAILHOST_STORAGE_ROOT/uploads/
into the blob store, and the job's ``upload`` becomes their sha256."""

from pathlib import Path

from django.conf import settings
from django.db import migrations

_HOLDING = ("queued", "running", "interrupted")


def move_uploads(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    from apps.store.blobs import get_blob_store

    ImportJob = apps.get_model("transfer", "ImportJob")
    uploads = Path(settings.MAILHOST_STORAGE_ROOT) / "uploads"
    for job in ImportJob.objects.filter(upload__endswith=".mbox", status__in=_HOLDING):
        path = uploads / job.upload
        if path.is_file():
            [job.upload] = get_blob_store().put_many([path.read_bytes()])
            job.save(update_fields=["upload"])
            path.unlink()


class Migration(migrations.Migration):
    dependencies = [("transfer", "0003_imap_import_job")]

    operations = [migrations.RunPython(move_uploads, migrations.RunPython.noop)]
