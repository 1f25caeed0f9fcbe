"""Where mail for a domain goes: MX lookup through the resolver seam (mailhost.dns).

RFC 5321 §5.1: MX records in preference order (equal preferences shuffled),
the domain itself as an implicit MX when it has none, and RFC 7505's null MX
("0 .") meaning the domain accepts no mail at all."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailhost import dns


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


async def host_addresses(host: str) -> list[str]:
    """The IPv6 and IPv4 addresses of ``host``, IPv6 first."""
    found: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            found.extend(await dns.aquery(host, rdtype))
        except dns.DnsTemporaryError:
            continue
    return found


async def resolve_hops(domain: str) -> list[Hop]:
    """The addresses to try for ``domain``, best first; DestinationError if none."""
    try:
        answer = await dns.get_resolver().aquery(domain, "MX")
    except dns.NoSuchDomain:
        raise DestinationError(f"550 5.1.2 Domain {domain} does not exist",
                               permanent=True) from None
    except dns.DnsTemporaryError as error:
        raise DestinationError(f"451 4.4.3 DNS lookup for {domain} failed: {error}",
                               permanent=False) from None
    records = []
    for record in answer:
        preference, _, exchange = record.partition(" ")
        records.append((int(preference), random.random(), exchange))
    records.sort()
    if not records:
        records = [(0, 0.0, domain)]  # RFC 5321 §5.1: the implicit MX
    # RFC 7505 §3: a single MX of "." says the domain accepts no mail.
    if len(records) == 1 and records[0][2] in ("", "."):
        raise DestinationError(f"556 5.1.10 Domain {domain} accepts no mail (null MX)",
                               permanent=True)
    hops: list[Hop] = []
    for _, _, host in records:
        if host in ("", "."):
            continue
        hops.extend(Hop(host, address) for address in await host_addresses(host))
    if not hops:
        raise DestinationError(f"451 4.4.4 No address found for the mail hosts of {domain}",
                               permanent=False)
    return hops
