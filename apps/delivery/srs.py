"""The Sender Rewriting Scheme (SRS), as libsrs2 and postsrsd write it.

Mail we forward to another domain leaves with an envelope sender of ours, so
that it passes SPF (RFC 7208) at the destination, and one a bounce can be
traced back from:

    SRS0=HHHH=TT=sender-domain=sender-local@our-domain

TT is the day (base32, two characters: days since the epoch mod 1024), HHHH
the first four base64 characters of an HMAC-SHA1 over TT, the domain and the
local part, keyed with MAILHOST_SRS_SECRET. An SRS0 address of another
forwarder is rewritten once more into SRS1 (SRS1=HHHH=their-domain==HHHH=TT=…),
keeping the way back to the original sender one hop long.

A bounce to such an address at our MX is let in only when the hash is right
(with the current secret or one of MAILHOST_SRS_OLD_SECRETS) and the day no
older than MAILHOST_SRS_MAX_AGE_DAYS; it then goes to the original sender.
The hash and the tag are read without regard to case, as libsrs2 does: some
servers lower-case the addresses they relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from django.conf import settings

from apps.directory.addresses import normalize_domain
from apps.directory.models import Domain
from apps.directory.services import Resolution, resolve
from mailhost.errors import Invalid, MailhostError

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 24 * 3600
_SLOTS = len(_BASE32) ** 2  # two characters of day stamp: it wraps every 1024 days
_HASH_LENGTH = 4
# The separator after the tag may be "=", "+" or "-" (libsrs2 accepts all three).
_SRS0 = re.compile(r"(?i)srs0([=+-])([^=]+)=([^=]{2})=([^=]+)=(.+)")
_SRS1 = re.compile(r"(?i)srs1([=+-])([^=]+)=([^=]+)=([=+-].+)")


class InvalidSrsAddress(MailhostError):
    """A bounce to an SRS address that we did not make, or made too long ago."""

    code = "invalid_srs_address"
    smtp_code = 550
    enhanced = "5.1.1"  # RFC 3463: bad destination mailbox address


def _secret_keys() -> list[bytes]:
    """The signing secret first, then those still accepted for verification."""
    current = settings.MAILHOST_SRS_SECRET or hmac.new(
        settings.SECRET_KEY.encode(), b"mailhost SRS", hashlib.sha256).hexdigest()
    return [secret.encode() for secret in (current, *settings.MAILHOST_SRS_OLD_SECRETS)]


def _hash(secret: bytes, *parts: str) -> str:
    digest = hmac.new(secret, "".join(parts).lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")[:_HASH_LENGTH]


def _hash_ok(given: str, *parts: str) -> bool:
    return any(hmac.compare_digest(given.lower(), _hash(secret, *parts).lower())
               for secret in _secret_keys())


def _day_stamp(now: float) -> str:
    day = int(now // _DAY) % _SLOTS
    return _BASE32[day // len(_BASE32)] + _BASE32[day % len(_BASE32)]


def _age_in_days(stamp: str, now: float) -> int | None:
    try:
        day = _BASE32.index(stamp[0].upper()) * len(_BASE32) + _BASE32.index(stamp[1].upper())
    except ValueError:
        return None
    return (int(now // _DAY) - day) % _SLOTS


def is_srs(address: str) -> bool:
    return address[:5].lower() in ("srs0=", "srs0+", "srs0-", "srs1=", "srs1+", "srs1-")


def forward(sender: str, our_domain: str, *, now: float | None = None) -> str:
    """The envelope sender for ``sender``'s mail forwarded from ``our_domain``."""
    now = time.time() if now is None else now
    secret = _secret_keys()[0]
    local, _, domain = sender.rpartition("@")
    srs0 = _SRS0.fullmatch(local)
    srs1 = _SRS1.fullmatch(local)
    if srs1:  # already forwarded twice: keep the first forwarder, re-sign the hop
        _, _, first_host, rest = srs1.groups()
        return f"SRS1={_hash(secret, first_host, rest)}={first_host}={rest}@{our_domain}"
    if srs0:  # another forwarder's SRS0: point back to it (SRS1)
        rest = local[4:]  # with its separator
        return f"SRS1={_hash(secret, domain, rest)}={domain}={rest}@{our_domain}"
    stamp = _day_stamp(now)
    return f"SRS0={_hash(secret, stamp, domain, local)}={stamp}={domain}={local}@{our_domain}"


def reverse(address: str, *, now: float | None = None) -> str:
    """Where a bounce to the SRS ``address`` goes: the original sender (SRS0),
    or the forwarder before us (SRS1). Raises InvalidSrsAddress."""
    now = time.time() if now is None else now
    local = address.rpartition("@")[0]
    srs0 = _SRS0.fullmatch(local)
    if srs0:
        _, given, stamp, domain, sender_local = srs0.groups()
        if not _hash_ok(given, stamp, domain, sender_local):
            raise InvalidSrsAddress(f"Invalid SRS address <{address}>")
        age = _age_in_days(stamp, now)
        if age is None or age > settings.MAILHOST_SRS_MAX_AGE_DAYS:
            raise InvalidSrsAddress(f"Expired SRS address <{address}>")
        return f"{sender_local}@{domain}"
    srs1 = _SRS1.fullmatch(local)
    if srs1:
        _, given, first_host, rest = srs1.groups()
        if not _hash_ok(given, first_host, rest):
            raise InvalidSrsAddress(f"Invalid SRS address <{address}>")
        return f"SRS0{rest}@{first_host}"
    raise InvalidSrsAddress(f"Not an SRS address <{address}>")


def _hosted(domain: str) -> bool:
    return Domain.objects.filter(name=domain).exists()


def forwarding_sender(sender: str, forwarder: str) -> str:
    """The envelope sender for mail to ``forwarder`` (an address here) that is
    forwarded outside: SRS-rewritten for ``forwarder``'s domain (or
    MAILHOST_SRS_DOMAIN), except the null sender and senders of our own
    domains, which pass SPF here as they are."""
    if not settings.MAILHOST_SRS or "@" not in sender:  # "<>" among them
        return sender
    if _hosted(sender.rpartition("@")[2].lower()):
        return sender
    our_domain = settings.MAILHOST_SRS_DOMAIN or forwarder.rpartition("@")[2].lower()
    return forward(sender, our_domain)


def resolve_recipient(address: str) -> Resolution:
    """``directory.resolve``, for an SRS address of ours too (``resolve_bounce``)."""
    return resolve_bounce(address) or resolve(address)


def resolve_bounce(address: str) -> Resolution | None:
    """A recipient that is an SRS address of one of our domains: where mail to
    it goes (the original sender, local or not). None for any other address.
    Raises InvalidSrsAddress for one whose hash or age is wrong."""
    if not is_srs(address):
        return None
    try:
        domain = normalize_domain(address.rpartition("@")[2])
    except Invalid:
        return None
    if not _hosted(domain):
        return None
    original = reverse(address)
    if not _hosted(original.rpartition("@")[2].lower()):
        # As it is: its owner may read the case of its local part.
        return Resolution(address, hosted=True, external=[original])
    local = resolve(original)
    return Resolution(address, hosted=True, mailboxes=local.mailboxes, external=local.external)
