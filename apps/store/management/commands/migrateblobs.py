"""Move message blobs between the local store and the S3 store:
``manage.py migrateblobs --to s3`` copies what ``MAILHOST_STORAGE_ROOT`` holds
into ``MAILHOST_BLOB_STORE=s3://…``; ``--to local`` copies back (with the S3
settings still in place; unset MAILHOST_BLOB_STORE afterwards). Resumable and
verified (apps/store/blobcopy.py); the source is left as it was."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.store.blobcopy import copy_blobs
from apps.store.blobs import local_blob_store


class Command(BaseCommand):
    help = "Copy message blobs from the local store to S3 (--to s3) or back (--to local)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", choices=("s3", "local"), required=True)
        parser.add_argument("--batch", type=int, default=100, help="blobs per upload batch")

    def handle(self, *args: object, **options: object) -> None:
        if not settings.MAILHOST_BLOB_STORE.startswith("s3://"):
            raise CommandError("MAILHOST_BLOB_STORE=s3://bucket/prefix names the S3 store")
        from apps.store import s3

        local, remote = local_blob_store(), s3.configured_store()
        source, target = (local, remote) if options["to"] == "s3" else (remote, local)
        progress = None
        for progress in copy_blobs(source, target, batch=int(options["batch"])):
            self.stdout.write(f"{progress.done}/{progress.total}: {progress.copied} copied, "
                              f"{progress.present} already there")
        if progress is None:
            self.stdout.write("no blobs to copy")
            return
        for name in progress.unreadable:
            self.stderr.write(f"blob {name} is missing or damaged in the source; not copied")
        self.stdout.write(f"done: {progress.copied} copied, {progress.present} already there"
                          + (f", {len(progress.unreadable)} unreadable"
                             if progress.unreadable else ""))
        if progress.unreadable:
            raise CommandError(f"{len(progress.unreadable)} blobs could not be copied")
