"""What a mail program needs to set up an account here: the servers, ports and
security to use, for the autoconfiguration formats (Thunderbird, Outlook
Autodiscover, Apple profiles) to render. Only hosted, active domains get an
answer: a stranger's domain must not be told to use our servers."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from apps.directory.addresses import normalize_address, normalize_domain
from apps.directory.models import Domain
from mailhost.errors import Invalid


@dataclass(frozen=True)
class Server:
    protocol: str  # "imap", "pop3" or "smtp"
    hostname: str
    port: int
    security: str  # "ssl" (implicit TLS, RFC 8314 §3) or "starttls"


@dataclass(frozen=True)
class ClientSettings:
    domain: str
    # The address being set up, "" when the client asked for the domain only.
    address: str
    incoming: tuple[Server, ...]  # best first
    outgoing: tuple[Server, ...]

    @property
    def imap(self) -> Server:
        return next(s for s in self.incoming if s.protocol == "imap")


def serves(domain: str) -> bool:
    """``domain`` (normalised) is hosted here and active: only such domains
    are told about our servers, in client settings as in the MTA-STS policy."""
    return Domain.objects.filter(name=domain, active=True).exists()


def client_settings(address_or_domain: str) -> ClientSettings | None:
    """The settings for ``user@domain`` (or a bare domain), or None when the
    domain is not hosted here, disabled, or the text is no address at all.
    Names and ports are the public ones (MAILHOST_PUBLIC_*), not the ports the
    listeners bind."""
    try:
        if "@" in address_or_domain:
            address = normalize_address(address_or_domain)
            domain = address.rpartition("@")[2]
        else:
            domain, address = normalize_domain(address_or_domain), ""
    except Invalid:
        return None
    if not serves(domain):
        return None
    host, ports = settings.MAILHOST_PUBLIC_HOSTNAME, settings.MAILHOST_PUBLIC_PORTS
    # RFC 8314 §3.3, §4.1: implicit TLS preferred over STARTTLS, for reading and sending.
    return ClientSettings(
        domain=domain, address=address,
        incoming=(Server("imap", host, ports["imaps"], "ssl"),
                  Server("imap", host, ports["imap"], "starttls"),
                  Server("pop3", host, ports["pop3s"], "ssl")),
        outgoing=(Server("smtp", host, ports["smtps"], "ssl"),
                  Server("smtp", host, ports["submission"], "starttls")),
    )
