"""SMTP-time policy for the MX: cheap checks before the 250.

Called from apps.smtp.server.InboundHandler. Each function answers None to
let the command through, or the SMTP reply that refuses it. Counters live in
Django's cache (Redis when configured), so that every listener process
counts together. DNS lookups and pyspf run in threads, off the event loop; the
per-recipient check runs in the thread of the recipient's directory lookup.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Iterable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from apps.antispam import auth, dns
from apps.directory.models import Domain
from mailhost import counters
from mailhost.dns import DnsTemporaryError, query

log = logging.getLogger("mailhost.antispam")

# RFC 3463 §3.8 X.7.1: delivery not authorized; 554 is RFC 5321's "transaction failed".
BLOCKLISTED = "554 5.7.1 Service unavailable; client [{ip}] blocked using {zone}"
SPF_REJECTED = "550 5.7.23 SPF validation failed: {explanation}"  # RFC 7372 §3.2
# RFC 7208 §8.6: a temperror refused at SMTP time is a 451; RFC 7372 §3.2 names
# X.7.24 "SPF validation error" for it. The sender retries; nothing is lost.
SPF_TEMPERROR = "451 4.7.24 SPF validation error: DNS lookup failed, try again later"
# RFC 6647 §2.1: greylisting answers with a temporary failure.
GREYLISTED = "451 4.7.1 Greylisted, please try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
TOO_MANY_MESSAGES = "450 4.7.1 Too many messages from your address, try again later"


def exempt_from_limits(ip: str) -> bool:
    """Whether ``ip`` is in MAILHOST_RATE_LIMIT_EXEMPT: neither rate limits nor
    connection limits (apps/mailservers/limits.py) apply to it."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False)
               for net in settings.MAILHOST_RATE_LIMIT_EXEMPT)


def _over_rate(kind: str, ip: str, limit: int) -> bool:
    """Fixed one-minute windows, counted across processes in the cache."""
    if limit <= 0 or exempt_from_limits(ip):
        return False
    key = f"antispam:rate:{kind}:{ip}:{int(time.time() // 60)}"
    return counters.increment(key, timeout=120) > limit


def counts_connections(ip: str) -> bool:
    """Whether connections from ``ip`` are counted at all."""
    return settings.MAILHOST_RATE_CONNECTIONS_PER_MINUTE > 0 and not exempt_from_limits(ip)


@sync_to_async(thread_sensitive=False)
def connection_refusal(ip: str) -> str | None:
    """At the first HELO/EHLO of a connection."""
    if _over_rate("conn", ip, settings.MAILHOST_RATE_CONNECTIONS_PER_MINUTE):
        log.info("refuse peer=%s reason=connection-rate", ip)
        return TOO_MANY_CONNECTIONS
    return None


def _dnsbl_listing(ip: str) -> str | None:
    for zone in settings.MAILHOST_DNSBL_ZONES:
        try:
            answers = query(dns.reverse_name(ip, zone), "A")
        except (DnsTemporaryError, ValueError):
            continue  # an unreachable list blocks nobody
        # RFC 5782 §2.1: listed means an A record in 127.0.0.0/8 (not 127.0.0.1).
        if any(a.startswith("127.") and a != "127.0.0.1" for a in answers):
            return zone
    return None


@sync_to_async(thread_sensitive=False)
def sender_refusal(ip: str, helo: str, mail_from: str, *, first_in_session: bool,
                   authenticated: bool) -> tuple[str | None, auth.SpfResult | None]:
    """At MAIL FROM: message rate, DNS blocklists (once per session), SPF.
    Returns the refusal (or None) and the SPF result to keep for DMARC."""
    if _over_rate("msg", ip, settings.MAILHOST_RATE_MESSAGES_PER_MINUTE):
        log.info("refuse peer=%s reason=message-rate", ip)
        return TOO_MANY_MESSAGES, None
    if authenticated:
        return None, None
    if first_in_session:
        zone = _dnsbl_listing(ip)
        if zone:
            log.info("refuse peer=%s reason=dnsbl zone=%s", ip, zone)
            return BLOCKLISTED.format(ip=ip, zone=zone), None
    spf = auth.check_spf(ip, mail_from, helo)
    if spf.result == "fail" and settings.MAILHOST_SPF_FAIL_ACTION == "reject":
        log.info("refuse peer=%s from=<%s> reason=spf-fail", ip, mail_from)
        explanation = "".join(ch for ch in spf.explanation if " " <= ch <= "~")[:200]
        return SPF_REJECTED.format(explanation=explanation or "sender not permitted"), spf
    if spf.result == "temperror" and settings.MAILHOST_SPF_FAIL_ACTION == "reject":
        log.info("defer peer=%s from=<%s> reason=spf-temperror", ip, mail_from)
        return SPF_TEMPERROR, spf
    return None, spf


def _network(ip: str) -> str:
    """Greylist by network: big senders retry from another address of the pool."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def recipient_refusal(ip: str, mail_from: str, recipient: str, *, authenticated: bool,
                      known_domains: Iterable[Domain] = ()) -> str | None:
    """At RCPT TO: greylisting, for domains that have it switched on. Called
    from a worker thread with the recipient's other checks; ``known_domains``
    (those of the resolved mailboxes) spare the query for the recipient's."""
    if authenticated:
        return None
    name = recipient.rpartition("@")[2].lower()
    known = next((d for d in known_domains if d.name == name), None)
    greylisting = (known.greylisting if known is not None
                   else Domain.objects.filter(name=name, greylisting=True).exists())
    if not greylisting:
        return None
    triplet = f"{_network(ip)}|{mail_from.lower()}|{recipient.lower()}"
    key = "antispam:grey:" + hashlib.sha256(triplet.encode()).hexdigest()
    passed_key = key + ":passed"
    if cache.get(passed_key):
        return None  # known: passed before, within the retention
    now = time.time()
    first_seen = cache.get(key)
    if first_seen is None:
        cache.set(key, now, timeout=settings.MAILHOST_GREYLIST_WINDOW)
        log.info("greylist peer=%s from=<%s> to=<%s>", ip, mail_from, recipient)
        return GREYLISTED
    if now - first_seen < settings.MAILHOST_GREYLIST_DELAY:
        return GREYLISTED  # retried too early
    cache.set(passed_key, 1, timeout=settings.MAILHOST_GREYLIST_RETENTION)
    return None
