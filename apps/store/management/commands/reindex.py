"""Fill the full-text index for blobs stored before it existed (or whose index
rows were lost): ``manage.py reindex [--batch N]``. Resumable: each batch
commits on its own, and a new run starts with the blobs still missing."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from apps.store import textindex


class Command(BaseCommand):
    help = "Index the text of the blobs the full-text index lacks, in batches"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=500, help="blobs per transaction")

    def handle(self, *args: object, **options: int) -> None:
        lost = textindex.forget_lost_rows()
        if lost:
            self.stdout.write(f"{lost} blobs had lost their index rows")
        indexed, unreadable, after = 0, 0, ""
        while True:
            batch = textindex.index_missing(after=after, limit=options["batch"])
            if not batch.last:
                break
            indexed += batch.indexed
            unreadable += len(batch.unreadable)
            for sha in batch.unreadable:
                self.stderr.write(f"blob {sha} could not be read; left unindexed")
            after = batch.last
            if options["verbosity"] > 1:
                self.stdout.write(f"{indexed} indexed so far")
        self.stdout.write(f"indexed {indexed} blobs" +
                          (f"; {unreadable} could not be read" if unreadable else ""))
