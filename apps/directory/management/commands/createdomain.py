from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory import services
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = "Create a hosted mail domain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--quota", type=int, help="default mailbox quota in bytes (0: none)")
        parser.add_argument("--max-mailboxes", type=int, default=0, help="0: unlimited")

    def handle(self, *args: object, **options: object) -> None:
        try:
            domain = services.create_domain(
                str(options["name"]),
                default_quota=options["quota"],  # type: ignore[arg-type]
                max_mailboxes=int(options["max_mailboxes"]),  # type: ignore[arg-type]
            )
        except MailhostError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"created domain {domain.name}")
