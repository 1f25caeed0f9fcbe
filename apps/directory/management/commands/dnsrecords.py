"""``manage.py dnsrecords DOMAIN``: the records to paste into the domain's zone."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.directory.addresses import normalize_domain
from apps.directory.dkim_rotation import state
from apps.directory.dns import dns_records, zone_lines
from apps.directory.models import Domain
from mailhost.errors import Invalid


class Command(BaseCommand):
    help = ("Print the DNS records (MX, SPF, DKIM, DMARC, client SRV and autoconfig names, "
            "MTA-STS, TLSRPT) a hosted domain needs, zone-file syntax.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")

    def handle(self, *args: object, **options: object) -> None:
        try:
            name = normalize_domain(str(options["domain"]))
        except Invalid as error:
            raise CommandError(error.message) from None
        domain = Domain.objects.filter(name=name).first()
        if domain is None:
            raise CommandError(f"{name} is not a hosted domain")
        for line in zone_lines(dns_records(domain, mail_host=settings.MAILHOST_HOSTNAME)):
            self.stdout.write(line)
        # A key in rotation (apps/directory/dkim_rotation.py): what its record is for.
        for key in domain.dkim_keys.filter(active=True).order_by("created", "pk"):
            if key.signing_since is None or key.retired is not None:
                self.stdout.write(f"; {key}: {state(key)}")
