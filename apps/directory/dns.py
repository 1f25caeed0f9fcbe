"""The DNS records a hosted domain needs, for administrators to publish at their
DNS provider: as data for the API, as zone-file lines for ``manage.py dnsrecords``.

Nothing here queries DNS; ``dns_records`` reads the domain's DKIM keys from the
database and the public names from settings, ``zone_lines`` is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from apps.directory.models import DkimKey, Domain

TTL = 3600
# RFC 1035 §3.3.14: one character-string holds at most 255 octets; a longer
# TXT value is several strings in one record (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
_TXT_CHUNK = 255


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str  # SRV: "weight port target", the priority apart as for MX
    purpose: str
    priority: int | None = None


def dns_records(domain: Domain, *, mail_host: str) -> list[DnsRecord]:
    """MX, SPF, one DKIM record per active key of ``domain`` (RSA and Ed25519,
    oldest first, so that a rotated key stays published beside its successor),
    DMARC, for ``domain`` served by ``mail_host``; then what mail programs and
    other servers look up: the client SRV records and autoconfiguration names,
    MTA-STS and TLS reporting."""
    name = domain.name
    keys = domain.dkim_keys.filter(active=True).order_by("created", "pk")
    return [
        # RFC 5321 §5.1: senders look up the MX records of the recipient's domain.
        DnsRecord("MX", name, mail_host, "where other servers deliver mail", priority=10),
        # RFC 7208 §5.4: "mx" authorizes the hosts named by the domain's MX records;
        # nobody else sends the domain's mail.
        DnsRecord("TXT", name, "v=spf1 mx -all", "SPF: which hosts may send as the domain"),
        *(dkim_record(name, key) for key in keys),
        # RFC 7489 §6.3: start at quarantine, relaxed alignment as signed and sent here.
        DnsRecord("TXT", f"_dmarc.{name}", "v=DMARC1; p=quarantine; adkim=r; aspf=r",
                  "DMARC: what receivers do with mail failing SPF and DKIM"),
        *_client_records(name),
        *_mta_sts_records(name, mail_host),
    ]


def _client_records(name: str) -> list[DnsRecord]:
    """RFC 6186 SRV records (with RFC 8314 §5.1's _submissions) naming the
    public host and ports, and the names Thunderbird and Outlook try."""
    host, ports = settings.MAILHOST_PUBLIC_HOSTNAME, settings.MAILHOST_PUBLIC_PORTS
    services = [
        ("_submissions", ports["smtps"], "sending, implicit TLS"),
        ("_submission", ports["submission"], "sending, STARTTLS"),
        ("_imaps", ports["imaps"], "IMAP, implicit TLS"),
        ("_imap", ports["imap"], "IMAP, STARTTLS"),
        ("_pop3s", ports["pop3s"], "POP3, implicit TLS"),
        # Outlook's last resort for Autodiscover: the web server's HTTPS port.
        ("_autodiscover", 443, "Outlook Autodiscover"),
    ]
    return [
        *(DnsRecord("SRV", f"{service}._tcp.{name}", f"1 {port} {host}",
                    f"client setup: {what}", priority=0)
          for service, port, what in services),
        DnsRecord("CNAME", f"autoconfig.{name}", host, "Thunderbird autoconfiguration"),
        DnsRecord("CNAME", f"autodiscover.{name}", host, "Outlook Autodiscover"),
    ]


def mta_sts_policy(*, mail_host: str) -> str:
    """Our MTA-STS policy (RFC 8461 §3.2), as served at
    https://mta-sts.<domain>/.well-known/mta-sts.txt for every hosted domain."""
    hosts = dict.fromkeys(h.lower() for h in (mail_host, settings.MAILHOST_PUBLIC_HOSTNAME))
    lines = ["version: STSv1", f"mode: {settings.MAILHOST_MTA_STS_MODE}",
             *(f"mx: {host}" for host in hosts),
             f"max_age: {settings.MAILHOST_MTA_STS_MAX_AGE}"]
    return "".join(f"{line}\r\n" for line in lines)


def _mta_sts_records(name: str, mail_host: str) -> list[DnsRecord]:
    # RFC 8461 §3.1: the id changes whenever the policy does, so senders refetch.
    policy_id = hashlib.sha256(mta_sts_policy(mail_host=mail_host).encode()).hexdigest()[:32]
    report_to = settings.MAILHOST_TLSRPT_ADDRESS or f"postmaster@{name}"
    return [
        DnsRecord("CNAME", f"mta-sts.{name}", settings.MAILHOST_PUBLIC_HOSTNAME,
                  "MTA-STS: the web host serving the policy"),
        DnsRecord("TXT", f"_mta-sts.{name}", f"v=STSv1; id={policy_id}",
                  "MTA-STS: the policy's version (RFC 8461)"),
        # RFC 8460 §3: where senders mail their TLS reports.
        DnsRecord("TXT", f"_smtp._tls.{name}", f"v=TLSRPTv1; rua=mailto:{report_to}",
                  "TLS reporting: where senders report failed TLS (RFC 8460)"),
    ]


def dkim_record(domain_name: str, key: DkimKey) -> DnsRecord:
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
        elif record.type == "SRV":
            # RFC 2782: priority weight port target.
            weight, port, target = record.value.split()
            data = f"{record.priority} {weight} {port} {_absolute(target)}"
        elif record.type == "CNAME":
            data = _absolute(record.value)
        elif record.type == "TXT":
            data = " ".join(f'"{record.value[i:i + _TXT_CHUNK]}"'
                            for i in range(0, len(record.value), _TXT_CHUNK))
        else:
            raise ValueError(f"no zone-file syntax for {record.type} records")
        lines.append(f"{_absolute(record.name)}\t{TTL}\tIN\t{record.type}\t{data}")
    return lines


def _absolute(name: str) -> str:
    return f"{name.rstrip('.')}."
