"""The DNS records a hosted domain needs: pure functions, no I/O.

Shown to administrators (API, admin panel) so that they can publish them at
their DNS provider; nothing here queries DNS.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.directory.models import Domain


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: str
    priority: int | None = None


def dns_records(domain: Domain, *, mail_host: str) -> list[DnsRecord]:
    """MX, SPF and DMARC for ``domain`` served by ``mail_host``, then DKIM."""
    name = domain.name
    return [
        # RFC 5321 §5.1: senders look up the MX records of the recipient's domain.
        DnsRecord("MX", name, mail_host, "where other servers deliver mail", priority=10),
        # RFC 7208 §5.4: "mx" authorizes the hosts named by the domain's MX records.
        DnsRecord("TXT", name, "v=spf1 mx -all", "SPF: which hosts may send as the domain"),
        # RFC 7489 §6.1: the policy record lives at _dmarc.<domain>.
        DnsRecord(
            "TXT", f"_dmarc.{name}", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{name}",
            "DMARC: what receivers do with mail failing SPF and DKIM",
        ),
        *dkim_records(domain),
    ]


def dkim_records(domain: Domain) -> list[DnsRecord]:
    """The ``<selector>._domainkey.<domain>`` TXT records of the domain's DKIM keys
    (RFC 6376 §3.6.2.1).

    DKIM joins here: the DKIM key model is built on its own branch; until it is
    merged a domain has no keys, so there is no record to publish.
    """
    return []
