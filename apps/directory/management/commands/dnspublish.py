"""``manage.py dnspublish DOMAIN [--dry-run]``: bring the domain's records in its
zone up to date by an RFC 2136 update (apps/directory/dnspublish.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory import dnspublish
from apps.directory.addresses import normalize_domain
from apps.directory.models import Domain
from mailhost.errors import MailhostError


class Command(BaseCommand):
    help = ("Print the changes that bring a hosted domain's records (MX, SPF, DKIM, DMARC, "
            "MTA-STS, TLSRPT, client SRV and autoconfig names) in its zone up to date, and "
            "make them by a TSIG-signed dynamic update; --dry-run only prints them.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the changes and the drift, change nothing")

    def handle(self, *args: object, **options: object) -> None:
        try:
            name = normalize_domain(str(options["domain"]))
            domain = Domain.objects.filter(name=name).first()
            if domain is None:
                raise CommandError(f"{name} is not a hosted domain")
            if options["dry_run"]:
                update_plan = dnspublish.plan(domain)
            else:
                update_plan = dnspublish.apply(domain)
        except MailhostError as error:
            raise CommandError(error.message) from None
        for drift in update_plan.drift:
            self.stderr.write(
                f"drift: {drift.name} {drift.type} was changed outside Mailhost: published "
                f"{', '.join(drift.published) or 'nothing'}; found "
                f"{', '.join(drift.found) or 'nothing'}")
        for change in update_plan.changes:
            self.stdout.write(str(change))
        if not update_plan.changes:
            self.stdout.write(f"{name}: the zone is up to date")
        elif not options["dry_run"]:
            self.stdout.write(f"{name}: {len(update_plan.changes)} changes made at "
                              f"{update_plan.target.server}")
