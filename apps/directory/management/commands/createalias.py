from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory import services
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = "Create an alias (ADDRESS, or @domain for a catch-all) to one or more destinations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        parser.add_argument("destinations", nargs="+")

    def handle(self, *args: object, **options: object) -> None:
        try:
            alias = services.create_alias(
                str(options["address"]), list(options["destinations"])  # type: ignore[call-overload]
            )
        except MailhostError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"created alias {alias.address} -> {', '.join(alias.destinations)}")
