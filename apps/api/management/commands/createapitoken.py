from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.api import services
from apps.directory.models import User
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = "Create an API token for the account LOGIN and print its key on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("login")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args: object, **options: object) -> None:
        login = str(options["login"]).strip().lower()
        user = User.objects.filter(email=login).first()
        if user is None:
            raise CommandError(f"no account {login}")
        try:
            token, key = services.create_token(user, name=str(options["name"]))
        except MailhostError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"created API token {token.prefix}… for {login} "
                          "(the key is shown only this once):")
        self.stdout.write(key)
