"""Where mail for a domain goes: MX lookup with dnspython's async resolver.

RFC 5321 §5.1: MX records in preference order (equal preferences shuffled),
the domain itself as an implicit MX when it has none, and RFC 7505's null MX
("0 .") meaning the domain accepts no mail at all."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
from django.conf import settings
from django.utils.module_loading import import_string


class DestinationError(Exception):
    """No host to try; ``permanent`` decides bounce or retry."""

    def __init__(self, reply: str, *, permanent: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


@dataclass(frozen=True)
class Hop:
    host: str  # the MX name, for logs and Remote-MTA
    address: str  # the IP address to connect to


def get_resolver() -> Any:
    """dnspython's async resolver, or the one MAILHOST_MX_RESOLVER names (tests)."""
    if settings.MAILHOST_MX_RESOLVER:
        return import_string(settings.MAILHOST_MX_RESOLVER)()
    return dns.asyncresolver.Resolver()


async def host_addresses(resolver: Any, host: str) -> list[str]:
    """The IPv6 and IPv4 addresses of ``host``, IPv6 first."""
    found: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
        found.extend(rdata.address for rdata in answer)
    return found


async def resolve_hops(domain: str, resolver: Any | None = None) -> list[Hop]:
    """The addresses to try for ``domain``, best first; DestinationError if none."""
    resolver = resolver or get_resolver()
    try:
        answer = await resolver.resolve(domain, "MX")
        records = sorted((r.preference, random.random(), r.exchange.to_text(omit_final_dot=True))
                          for r in answer)
    except dns.resolver.NXDOMAIN:
        raise DestinationError(f"550 5.1.2 Domain {domain} does not exist",
                               permanent=True) from None
    except dns.resolver.NoAnswer:
        records = [(0, 0.0, domain)]  # RFC 5321 §5.1: the implicit MX
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        raise DestinationError(f"451 4.4.3 DNS lookup for {domain} failed: {error}",
                               permanent=False) from None
    # RFC 7505 §3: a single MX of "." says the domain accepts no mail.
    if len(records) == 1 and records[0][2] in ("", "."):
        raise DestinationError(f"556 5.1.10 Domain {domain} accepts no mail (null MX)",
                               permanent=True)
    hops: list[Hop] = []
    for _, _, host in records:
        if host in ("", "."):
            continue
        try:
            hops.extend(Hop(host, address) for address in await host_addresses(resolver, host))
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            continue
    if not hops:
        raise DestinationError(f"451 4.4.4 No address found for the mail hosts of {domain}",
                               permanent=False)
    return hops
