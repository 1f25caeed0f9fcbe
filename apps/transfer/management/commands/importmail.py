"""``manage.py importmail ADDRESS --imap HOST … | --mbox PATH | --maildir PATH``:
copy mail into a hosted mailbox (apps/transfer/importing.py). Running it again
copies only what is new."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.transfer import importing
from apps.transfer.terminal import hosted_mailbox, progress_bar


class Command(BaseCommand):
    help = "Import mail into a mailbox from a remote IMAP account, an mbox file or a Maildir"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address", help="the hosted mailbox to import into")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--imap", metavar="HOST[:PORT]", help="a remote IMAP server")
        source.add_argument("--mbox", type=Path, metavar="PATH",
                            help="an mbox file, or a directory of *.mbox files")
        source.add_argument("--maildir", type=Path, metavar="PATH", help="a Maildir tree")
        parser.add_argument("--user", help="the remote IMAP login")
        parser.add_argument("--password-file", type=Path,
                            help="a file holding the remote password (else "
                                 "$MAILHOST_IMPORT_PASSWORD, else a prompt)")
        parser.add_argument("--tls", choices=sorted(importing.IMAP_PORTS), default="ssl",
                            help="ssl (IMAPS, default), starttls or none")
        parser.add_argument("--insecure", action="store_true",
                            help="accept any certificate from the remote server")
        parser.add_argument("--folder", default="INBOX",
                            help="the folder an mbox file goes into (default INBOX)")
        parser.add_argument("--mbox-variant", choices=["mboxrd", "mboxo"], default="mboxrd",
                            help="how the mbox quotes From_ lines (default mboxrd)")
        parser.add_argument("--batch", type=int, default=importing.BATCH_MESSAGES,
                            help="messages per transaction")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        mailbox = hosted_mailbox(options["address"])
        source = self._source(options)
        try:
            with progress_bar(self.stderr._out, disable=options["no_progress"]) as report:
                result = importing.import_mail(mailbox, source, batch=options["batch"],
                                               progress=report)
        finally:
            if isinstance(source, importing.ImapSource):
                source.close()
        for problem in result.problems:
            self.stderr.write(f"skipped {problem}")
        self.stdout.write(f"imported {result.copied} messages ({result.bytes_copied} bytes); "
                          f"{result.skipped} were there already")
        if result.stopped:
            raise CommandError(f"stopped: {result.stopped}")

    def _source(self, options: dict[str, Any]) -> importing.Source:
        if options["mbox"]:
            return importing.MboxSource(options["mbox"], folder=options["folder"],
                                        variant=options["mbox_variant"])
        if options["maildir"]:
            return importing.MaildirSource(options["maildir"])
        if not options["user"]:
            raise CommandError("--imap needs --user")
        host, _, port = options["imap"].rpartition(":") if ":" in options["imap"] else (
            options["imap"], "", "")
        if options["password_file"]:
            password = options["password_file"].read_text().rstrip("\r\n")
        else:
            password = (os.environ.get("MAILHOST_IMPORT_PASSWORD")
                        or getpass.getpass(f"password of {options['user']}: "))
        try:
            return importing.ImapSource(host, int(port or importing.IMAP_PORTS[options["tls"]]),
                                        options["user"], password, tls=options["tls"],
                                        verify_certificate=not options["insecure"])
        except importing.SourceUnavailable as error:
            raise CommandError(f"cannot read {options['imap']}: {error.message}") from None
