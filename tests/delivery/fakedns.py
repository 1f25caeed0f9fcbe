"""A DNS that answers from a dict: injected through MAILHOST_MX_RESOLVER for
delivery, and as dkimpy's ``dnsfunc`` for verification. Never the network."""

from __future__ import annotations

import dkim
import dns.rdata
import dns.resolver

# (name, type) -> presentation-format rdata, filled by each test.
RECORDS: dict[tuple[str, str], list[str]] = {}


def _name(qname: object) -> str:
    return str(qname).rstrip(".").lower()


def publish(zone_lines: list[str]) -> None:
    """Load zone-file lines (``name ttl IN type rdata``) into the fake DNS."""
    for line in zone_lines:
        name, _ttl, _class, rdtype, rdata = line.split(None, 4)
        RECORDS.setdefault((_name(name), rdtype), []).append(rdata)


class FakeResolver:
    async def resolve(self, qname: object, rdtype: str) -> list[dns.rdata.Rdata]:
        name = _name(qname)
        if not any(key[0] == name for key in RECORDS):
            raise dns.resolver.NXDOMAIN
        texts = RECORDS.get((name, rdtype))
        if not texts:
            raise dns.resolver.NoAnswer
        return [dns.rdata.from_text("IN", rdtype, text) for text in texts]


def txt_lookup(name: bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's dnsfunc: the TXT record's strings joined (RFC 6376 §3.6.2.2)."""
    texts = RECORDS.get((_name(name.decode()), "TXT"))
    if not texts:
        return None
    return b"".join(dns.rdata.from_text("IN", "TXT", texts[0]).strings)  # type: ignore[attr-defined]


def dkim_verifies(message: bytes, index: int) -> bool:
    """Signature number ``index`` verifies against this DNS (dkimpy raises for
    a broken one where dkim.verify() would answer False)."""
    try:
        return dkim.DKIM(message).verify(idx=index, dnsfunc=txt_lookup)
    except dkim.ValidationError:
        return False
