"""The sender checks' DNS, over the one resolver seam (mailhost.dns).

Every lookup the antispam checks make (SPF through pyspf, DKIM keys through
dkimpy, DMARC records, DNSBLs) goes through ``mailhost.dns``; this module
adapts it to the shapes pyspf and dkimpy expect.
"""

from __future__ import annotations

import ipaddress

import spf

from mailhost import dns
from mailhost.dns import DnsTemporaryError

# RFC 7208 §3.4 wants SPF records to fit a 512-octet DNS answer; DNS over TCP
# carries up to 64 KiB, and pyspf's macro expansion is quadratic in a record's
# length (fuzzing: 16 KiB took 1.3 s of CPU, 64 KiB 18 s). A published record
# longer than this is refused as malformed (permerror) instead of evaluated.
MAX_SPF_RECORD = 4096


def txt_records(name: str) -> list[str]:
    return dns.query(name.rstrip("."), "TXT")


def dkim_dnsfunc(name: str | bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's ``dnsfunc``: the first TXT record of ``name``, or None."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    records = txt_records(name)
    return records[0].encode() if records else None


def pyspf_lookup(name: str, qtype: str, strict: object = True,
                 timeout: object = None) -> list[tuple[tuple[str, str], object]]:
    """pyspf's ``DNSLookup`` over our resolver, in the shapes pyspf expects."""
    try:
        records = dns.query(name, qtype)
    except DnsTemporaryError as error:
        raise spf.TempError(f"DNS {error}") from error
    answers: list[tuple[tuple[str, str], object]] = []
    for record in records:
        value: object = record
        if qtype in ("TXT", "SPF"):
            if len(record) > MAX_SPF_RECORD and record[:7].lower() == "v=spf1 ":
                raise spf.PermError(f"SPF record of {name} longer than {MAX_SPF_RECORD} "
                                    "octets")
            value = [record.encode()]
        elif qtype == "MX":
            preference, _, exchange = record.partition(" ")
            value = (int(preference), exchange)
        answers.append(((name, qtype), value))
    return answers


def reverse_name(ip: str, zone: str) -> str:
    """The DNSBL query name of an address (RFC 5782 §2.1, §2.4)."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        labels = ".".join(reversed(ip.split(".")))
    else:
        labels = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{labels}.{zone}"
