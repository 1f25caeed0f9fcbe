"""The DNS page's live check: each record a domain should publish
(apps/directory/dns.py) looked up through the project's resolver
(mailhost/dns.py, so ``MAILHOST_DNS_*`` settings apply) and marked
published correctly, missing, or different with what was found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from apps.directory.dns import DnsRecord
from mailhost.dns import DnsTemporaryError, query


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    UNKNOWN = "unknown"  # the lookup failed (timeout, SERVFAIL): try again later


@dataclass
class RecordCheck:
    record: DnsRecord
    status: Status
    found: list[str] = field(default_factory=list)
    error: str = ""


def _tags(value: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 §3.2, RFC 7489 §6.4), whitespace ignored."""
    tags = {}
    for part in value.split(";"):
        name, _, tag_value = part.partition("=")
        if name.strip():
            tags[name.strip().lower()] = "".join(tag_value.split())
    return tags


# A TXT record's kind by its version tag (RFC 7208 §4.5, RFC 6376 §3.6.1,
# RFC 7489 §6.4, RFC 8461 §3.1, RFC 8460 §3).
_TXT_KINDS = {"v=spf1": "spf", "v=dkim1": "dkim", "v=dmarc1": "dmarc",
              "v=stsv1": "mta-sts", "v=tlsrptv1": "tlsrpt"}
# Kinds of which a name holds one record only.
_SINGLE = {"spf", "dkim", "dmarc", "mta-sts", "tlsrpt", "cname"}


def _kind(record: DnsRecord) -> str:
    if record.type != "TXT":
        return record.type.lower()
    prefix = record.value.split(";")[0].split()[0].lower()
    return _TXT_KINDS[prefix]


def _relevant(kind: str, answers: list[str]) -> list[str]:
    """The answers that are this kind of record: a name may hold other TXT
    records (site verifications) beside the one we look for."""
    if kind in ("mx", "srv", "cname", "dkim"):
        return answers
    prefix = next(p for p, k in _TXT_KINDS.items() if k == kind)
    return [a for a in answers if a.strip().lower().startswith(prefix)]


def _host(name: str) -> str:
    return name.rstrip(".").lower()


def _matches(kind: str, record: DnsRecord, answer: str) -> bool:
    if kind == "mx":
        # RFC 5321 §5.1: the host matters; any preference will do.
        host = answer.split()[-1] if answer.split() else ""
        return _host(host) == _host(record.value)
    if kind == "srv":
        # RFC 2782: priority weight port target, all as published.
        want = [str(record.priority), *record.value.split()]
        got = answer.split()
        return len(got) == 4 and got[:3] == want[:3] and _host(got[3]) == _host(want[3])
    if kind == "cname":
        return _host(answer) == _host(record.value)
    if kind == "spf":
        # RFC 7208 §4.6.1: terms separated by spaces; case does not matter.
        return answer.lower().split() == record.value.lower().split()
    if kind == "dkim":
        # RFC 6376 §3.6.1: the key (p=) and its type (k=, rsa by default) matter.
        want, got = _tags(record.value), _tags(answer)
        return got.get("p") == want.get("p") and got.get("k", "rsa") == want.get("k", "rsa")
    return _tags(answer) == _tags(record.value)


def check_record(record: DnsRecord) -> RecordCheck:
    kind = _kind(record)
    try:
        answers = query(record.name, record.type)
    except DnsTemporaryError as error:
        return RecordCheck(record, Status.UNKNOWN, error=str(error) or "no answer")
    found = _relevant(kind, answers)
    if not found:
        return RecordCheck(record, Status.MISSING)
    if kind not in _SINGLE:
        ok = any(_matches(kind, record, answer) for answer in found)
    else:
        # SPF, DMARC, MTA-STS and TLSRPT must be the only record of their kind
        # (RFC 7208 §4.5, RFC 7489 §6.6.3, RFC 8461 §3.1, RFC 8460 §3), a DKIM
        # selector names one key, and a CNAME stands alone (RFC 1034 §3.6.2).
        ok = len(found) == 1 and _matches(kind, record, found[0])
    return RecordCheck(record, Status.OK if ok else Status.DIFFERENT, found)


# A domain has some sixteen records to check and each lookup waits on the
# network: asked together, the page waits for the slowest, not for the sum.
PARALLEL_LOOKUPS = 16


def check_records(records: list[DnsRecord]) -> list[RecordCheck]:
    """Each record checked, in the order given; the lookups run at once."""
    if len(records) < 2:
        return [check_record(record) for record in records]
    with ThreadPoolExecutor(min(PARALLEL_LOOKUPS, len(records)),
                            thread_name_prefix="dns-check") as pool:
        return list(pool.map(check_record, records))
