import getpass
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory import services
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = "Create a mailbox; the password is asked for, or read from standard input."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")
        parser.add_argument("--quota", type=int, help="bytes (default: the domain's)")
        parser.add_argument("--name", default="", help="display name")

    def handle(self, *args: object, **options: object) -> None:
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the passwords do not match")
        try:
            mailbox = services.create_mailbox(
                str(options["address"]), password,
                quota=options["quota"],  # type: ignore[arg-type]
                display_name=str(options["name"]),
            )
        except MailhostError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"created mailbox {mailbox.address}")
