"""DNS for the sender checks, behind one seam.

Every lookup the antispam checks make (SPF through pyspf, DKIM keys through
dkimpy, DMARC records, DNSBLs) goes through ``get_resolver()``, which builds
the class named by ``MAILHOST_DNS_RESOLVER``. Production uses dnspython; tests
name a fake that answers from a table, so that no test queries real DNS.

A resolver answers ``query(name, rdtype)`` with a list of strings (TXT: the
character-strings joined; MX: "preference exchange"), an empty list for
NXDOMAIN or no data, and raises ``DnsTemporaryError`` when it cannot tell.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import dns.exception
import dns.resolver
import spf
from django.conf import settings
from django.utils.module_loading import import_string


class DnsTemporaryError(Exception):
    """The lookup could not be completed (timeout, SERVFAIL)."""


class Resolver(Protocol):
    def query(self, name: str, rdtype: str) -> list[str]: ...


class DnsPythonResolver:
    def __init__(self) -> None:
        servers = settings.MAILHOST_DNS_NAMESERVERS
        # Without a list, the system's resolver configuration (/etc/resolv.conf).
        self._resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = list(servers)
            self._resolver.port = settings.MAILHOST_DNS_PORT
        self._resolver.lifetime = settings.MAILHOST_DNS_TIMEOUT

    def query(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.NoResolverConfiguration) as error:
            raise DnsTemporaryError(str(error)) from error
        except dns.exception.DNSException as error:
            raise DnsTemporaryError(str(error)) from error
        if rdtype in ("TXT", "SPF"):
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if rdtype == "MX":
            return [f"{r.preference} {r.exchange.to_text(omit_final_dot=True)}"
                    for r in answer]
        if rdtype in ("PTR", "CNAME"):
            return [r.target.to_text(omit_final_dot=True) for r in answer]
        return [r.to_text() for r in answer]


_resolvers: dict[tuple[object, ...], Resolver] = {}


def get_resolver() -> Resolver:
    """The configured resolver (settings are read at call time)."""
    key = (settings.MAILHOST_DNS_RESOLVER, tuple(settings.MAILHOST_DNS_NAMESERVERS),
           settings.MAILHOST_DNS_PORT, settings.MAILHOST_DNS_TIMEOUT)
    resolver = _resolvers.get(key)
    if resolver is None:
        resolver = _resolvers[key] = import_string(settings.MAILHOST_DNS_RESOLVER)()
    return resolver


def txt_records(name: str) -> list[str]:
    return get_resolver().query(name.rstrip("."), "TXT")


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
        records = get_resolver().query(name, qtype)
    except DnsTemporaryError as error:
        raise spf.TempError(f"DNS {error}") from error
    answers: list[tuple[tuple[str, str], object]] = []
    for record in records:
        value: object = record
        if qtype in ("TXT", "SPF"):
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
