"""The tests' DNS (MAILHOST_DNS_RESOLVER=tests.fakedns.FakeResolver): answers
from a table, never from the network, for every app that asks through
mailhost.dns (sender checks, MX lookups, the DNS page) and for dkimpy's
verification in tests (``dkim_verifies``).

Tests fill ``ZONE`` (``key(name, type)`` -> answers in mailhost.dns's form,
or ``publish`` zone-file lines into it); a process started by a test reads the
JSON file named by MAILHOST_FAKE_DNS instead (re-read on every query, so a
test may change it while the process runs). A name with no entry of any type
does not exist (NXDOMAIN).

A value is a list of answers, ``"TEMPFAIL"`` (the lookup fails temporarily)
or ``{"sleep": seconds, "answers": [...]}`` (a slow server).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import dns.rdata

from mailhost.dns import DnsTemporaryError, NoSuchDomain, answer_text

ZONE: dict[str, object] = {}


def key(name: str, rdtype: str) -> str:
    return f"{name.lower().rstrip('.')} {rdtype.upper()}"


def publish(zone_lines: list[str]) -> None:
    """Load zone-file lines (``name ttl IN type rdata``) into ``ZONE``."""
    for line in zone_lines:
        name, _ttl, _class, rdtype, rdata = line.split(None, 4)
        answers = ZONE.setdefault(key(name, rdtype), [])
        assert isinstance(answers, list)
        answers.append(answer_text(dns.rdata.from_text("IN", rdtype, rdata)))


def _lookup(name: str, rdtype: str) -> tuple[float, list[str]]:
    """(seconds the answer takes, the answers)."""
    path = os.environ.get("MAILHOST_FAKE_DNS")
    zone = json.loads(Path(path).read_text()) if path else ZONE
    wanted = key(name, rdtype)
    owner = wanted.rpartition(" ")[0] + " "
    if wanted not in zone and not any(k.startswith(owner) for k in zone):
        raise NoSuchDomain(name)
    value = zone.get(wanted, [])
    if value == "TEMPFAIL":
        raise DnsTemporaryError(f"{name} {rdtype}: SERVFAIL")
    if isinstance(value, dict):
        return value["sleep"], list(value["answers"])
    assert isinstance(value, list)
    return 0, list(value)


class FakeResolver:
    def query(self, name: str, rdtype: str) -> list[str]:
        delay, answers = _lookup(name, rdtype)
        time.sleep(delay)
        return answers

    async def aquery(self, name: str, rdtype: str) -> list[str]:
        delay, answers = _lookup(name, rdtype)
        await asyncio.sleep(delay)
        return answers


def txt_lookup(name: bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's dnsfunc over ``ZONE``: the first TXT record (RFC 6376 §3.6.2.2)."""
    texts = ZONE.get(key(name.decode(), "TXT"))
    return texts[0].encode() if isinstance(texts, list) and texts else None


def dkim_verifies(message: bytes, index: int) -> bool:
    """Signature number ``index`` verifies against this DNS (dkimpy raises for
    a broken one where dkim.verify() would answer False)."""
    import dkim  # not at the top: the benchmarks' listeners use this resolver too

    try:
        return dkim.DKIM(message).verify(idx=index, dnsfunc=txt_lookup)
    except dkim.ValidationError:
        return False
