from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory.addresses import normalize_address
from apps.directory.models import Mailbox
from apps.pop3 import services
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = 'Switch "leave a copy on the server" for a mailbox\'s POP3 sessions.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        parser.add_argument("state", choices=["on", "off"])

    def handle(self, *args: object, **options: object) -> None:
        try:
            address = normalize_address(str(options["address"]))
        except MailhostError as error:
            raise CommandError(error.message) from None
        mailbox = Mailbox.objects.filter(address=address).first()
        if mailbox is None:
            raise CommandError(f"no mailbox {address}")
        services.set_leave_copy(mailbox, options["state"] == "on")
        self.stdout.write(f"{address}: leave a copy on the server {options['state']}")
