"""``manage.py certificate status|renew|issue``: the listeners' certificate
over ACME (README "Automatic TLS certificates")."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.certificates import services, storage


class Command(BaseCommand):
    help = ("status: the served certificate and whether it is due; renew: issue it "
            "if due (what beat does); issue: issue it now.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "renew", "issue"])

    def handle(self, *args: object, **options: object) -> None:
        action = options["action"]
        try:
            if action == "issue":
                services.renew(force=True)
            elif action == "renew" and not services.renew():
                self.stdout.write("not renewed: " + services.status().reason)
        except services.CertificateError as error:
            raise CommandError(error.message) from None
        state = services.status()
        cert_path, _ = storage.configured_paths()
        current = state.installed
        self.stdout.write(f"certificate: {cert_path}")
        if current is not None:
            self.stdout.write(f"names: {', '.join(sorted(current.names))}")
            self.stdout.write(f"issuer: {current.issuer}")
            self.stdout.write(f"expires: {current.not_after.isoformat()}")
        self.stdout.write(f"wanted: {', '.join(state.names)}")
        verdict = "due: " if state.due else "ok: " if state.enabled else ""
        self.stdout.write(verdict + state.reason)
