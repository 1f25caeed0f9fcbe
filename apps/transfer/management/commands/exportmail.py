"""``manage.py exportmail ADDRESS --mbox DIR | --maildir DIR``: write a hosted
mailbox out with flags, keywords and internal dates (apps/transfer/exporting.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory.models import Mailbox
from apps.transfer import exporting
from apps.transfer.terminal import ProgressBar
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
        mailbox = Mailbox.objects.filter(address__iexact=options["address"]).first()
        if mailbox is None:
            raise CommandError(f"no mailbox {options['address']}")
        bar = ProgressBar(self.stderr._out, disable=options["no_progress"])
        try:
            if options["mbox"]:
                result = exporting.export_mbox(mailbox, options["mbox"], progress=bar.callback)
            else:
                result = exporting.export_maildir(mailbox, options["maildir"],
                                                  progress=bar.callback)
        except MailhostError as error:
            raise CommandError(error.message) from error
        finally:
            bar.close()
        self.stdout.write(f"exported {result.copied} messages ({result.bytes_copied} bytes)")
