"""DNS, behind one seam for every app that asks.

The sender checks (SPF through pyspf, DKIM keys through dkimpy, DMARC, DNSBLs),
the outbound MX lookups and the admin panel's DNS check all query through the
resolver that ``MAILHOST_DNS_RESOLVER`` names, built once per configuration by
``get_resolver()``. Production uses dnspython against MAILHOST_DNS_NAMESERVERS
(or the system's); tests name a fake that answers from a table, so that no
test queries real DNS.

A resolver answers ``query(name, rdtype)`` (and ``aquery`` from asyncio) with a
list of strings in the presentation form ``answer_text`` gives (TXT: its
character-strings joined; MX: "preference exchange"; A/AAAA: the address), an
empty list when the name has no such records, and raises ``NoSuchDomain`` for
NXDOMAIN and ``DnsTemporaryError`` when it cannot tell. ``query``/``aquery``
here answer NXDOMAIN with an empty list too, for callers to whom it is the same.
"""

from __future__ import annotations

from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.rdatatype
import dns.resolver
from django.conf import settings
from django.utils.module_loading import import_string


class DnsTemporaryError(Exception):
    """The lookup could not be completed (timeout, SERVFAIL)."""


class NoSuchDomain(Exception):
    """NXDOMAIN: the name does not exist at all."""


class Resolver(Protocol):
    def query(self, name: str, rdtype: str) -> list[str]: ...

    async def aquery(self, name: str, rdtype: str) -> list[str]: ...


def answer_text(rdata: dns.rdata.Rdata) -> str:
    """One record in the form resolvers answer with."""
    rdtype = dns.rdatatype.to_text(rdata.rdtype)
    if rdtype in ("TXT", "SPF"):
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdtype == "MX":
        exchange = rdata.exchange.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
        return f"{rdata.preference} {exchange}"  # type: ignore[attr-defined]
    if rdtype in ("PTR", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
    return rdata.to_text()


class DnsPythonResolver:
    """dnspython, synchronous and asynchronous, configured from the settings."""

    def __init__(self) -> None:
        servers = settings.MAILHOST_DNS_NAMESERVERS
        self._resolver = dns.resolver.Resolver(configure=not servers)
        self._async = dns.asyncresolver.Resolver(configure=not servers)
        for resolver in (self._resolver, self._async):
            # Without a list, the system's resolver configuration (/etc/resolv.conf).
            if servers:
                resolver.nameservers = list(servers)
                resolver.port = settings.MAILHOST_DNS_PORT
            resolver.lifetime = settings.MAILHOST_DNS_TIMEOUT

    def query(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as error:
            raise _translated(error) from error
        return [answer_text(rdata) for rdata in answer]

    async def aquery(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = await self._async.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as error:
            raise _translated(error) from error
        return [answer_text(rdata) for rdata in answer]


def _translated(error: dns.exception.DNSException) -> Exception:
    if isinstance(error, dns.resolver.NXDOMAIN):
        return NoSuchDomain(str(error))
    # Timeout, SERVFAIL from every server (NoNameservers), no configuration…
    return DnsTemporaryError(str(error))


_resolvers: dict[tuple[object, ...], Resolver] = {}


def get_resolver() -> Resolver:
    """The configured resolver (settings are read at call time)."""
    key = (settings.MAILHOST_DNS_RESOLVER, tuple(settings.MAILHOST_DNS_NAMESERVERS),
           settings.MAILHOST_DNS_PORT, settings.MAILHOST_DNS_TIMEOUT)
    resolver = _resolvers.get(key)
    if resolver is None:
        resolver = _resolvers[key] = import_string(settings.MAILHOST_DNS_RESOLVER)()
    return resolver


def query(name: str, rdtype: str) -> list[str]:
    """The records of ``name``; none for a name that does not exist."""
    try:
        return get_resolver().query(name, rdtype)
    except NoSuchDomain:
        return []


async def aquery(name: str, rdtype: str) -> list[str]:
    """``query`` from asyncio."""
    try:
        return await get_resolver().aquery(name, rdtype)
    except NoSuchDomain:
        return []
