"""``manage.py exportmail ADDRESS --mbox DIR | --maildir DIR``: write a hosted
mailbox out with flags, keywords and internal dates (apps/transfer/exporting.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.transfer import exporting
from apps.transfer.terminal import hosted_mailbox, progress_bar
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = "Export a mailbox to mbox files (one per folder) or to a Maildir tree"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address", help="the hosted mailbox to export")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--mbox", type=Path, metavar="DIR",
                            help="a new directory for one mbox file per folder")
        target.add_argument("--maildir", type=Path, metavar="DIR",
                            help="a new Maildir++ tree")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        mailbox = hosted_mailbox(options["address"])
        export = exporting.export_mbox if options["mbox"] else exporting.export_maildir
        try:
            with progress_bar(self.stderr._out, disable=options["no_progress"]) as report:
                result = export(mailbox, options["mbox"] or options["maildir"], progress=report)
        except MailhostError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"exported {result.copied} messages ({result.bytes_copied} bytes)")
