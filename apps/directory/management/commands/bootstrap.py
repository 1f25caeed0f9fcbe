import secrets

from django.core.management.base import BaseCommand

from apps.directory.models import Role, User


class Command(BaseCommand):
    help = "Create the first administrator account, once, and print its credentials."

    def handle(self, *args: object, **options: object) -> None:
        if User.objects.filter(role=Role.SUPERADMIN).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin@localhost", password)
        self.stdout.write(
            "\n  Created the administrator account (shown only this once):\n"
            "    login:    admin@localhost\n"
            f"    password: {password}\n"
            "  Sign in at http://127.0.0.1:8000/\n"
        )
