"""The DNS records a hosted domain needs, for administrators to publish at their
DNS provider: as data for the API, as zone-file lines for ``manage.py dnsrecords``.

Nothing here queries DNS; ``dns_records`` reads the domain's DKIM keys from the
database, ``zone_lines`` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from apps.directory.models import DkimKey, Domain

TTL = 3600
# RFC 1035 §3.3.14: one character-string holds at most 255 octets; a longer
# TXT value is several strings in one record (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
_TXT_CHUNK = 255


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: str
    priority: int | None = None


def dns_records(domain: Domain, *, mail_host: str) -> list[DnsRecord]:
    """MX, SPF, one DKIM record per active key of ``domain`` (RSA and Ed25519,
    oldest first, so that a rotated key stays published beside its successor),
    and DMARC, for ``domain`` served by ``mail_host``."""
    name = domain.name
    keys = domain.dkim_keys.filter(active=True).order_by("created", "pk")
    return [
        # RFC 5321 §5.1: senders look up the MX records of the recipient's domain.
        DnsRecord("MX", name, mail_host, "where other servers deliver mail", priority=10),
        # RFC 7208 §5.4: "mx" authorizes the hosts named by the domain's MX records;
        # nobody else sends the domain's mail.
        DnsRecord("TXT", name, "v=spf1 mx -all", "SPF: which hosts may send as the domain"),
        *(_dkim_record(name, key) for key in keys),
        # RFC 7489 §6.3: start at quarantine, relaxed alignment as signed and sent here.
        DnsRecord("TXT", f"_dmarc.{name}", "v=DMARC1; p=quarantine; adkim=r; aspf=r",
                  "DMARC: what receivers do with mail failing SPF and DKIM"),
    ]


def _dkim_record(domain_name: str, key: DkimKey) -> DnsRecord:
    # RFC 6376 §3.6.1: the key record at <selector>._domainkey.<domain>;
    # k= is the key type, "rsa" or (RFC 8463 §4) "ed25519".
    key_type = key.algorithm.partition("-")[0]
    return DnsRecord(
        "TXT", f"{key.selector}._domainkey.{domain_name}",
        f"v=DKIM1; k={key_type}; p={key.public_key}",
        f"DKIM: the {key.algorithm} public key of selector {key.selector}",
    )


def zone_lines(records: Iterable[DnsRecord]) -> list[str]:
    """The records in zone-file syntax (RFC 1035 §5.1), one per line, names
    fully qualified."""
    lines = []
    for record in records:
        if record.type == "MX":
            data = f"{record.priority} {_absolute(record.value)}"
        elif record.type == "TXT":
            data = " ".join(f'"{record.value[i:i + _TXT_CHUNK]}"'
                            for i in range(0, len(record.value), _TXT_CHUNK))
        else:
            raise ValueError(f"no zone-file syntax for {record.type} records")
        lines.append(f"{_absolute(record.name)}\t{TTL}\tIN\t{record.type}\t{data}")
    return lines


def _absolute(name: str) -> str:
    return f"{name.rstrip('.')}."
