"""DKIM key rotation, one idempotent step function that beat runs hourly.

For each algorithm a domain signs with (RSA, Ed25519), the cycle is:
1. the signing key is older than MAILHOST_DKIM_ROTATE_DAYS: a new key pair
   with a new selector is made; it is published (active) but does not sign;
2. if the domain has an update target, its zone is updated (dnspublish);
   otherwise the panel's DNS page and ``manage.py dnsrecords`` show the record
   to publish, and the rotation waits for a person to publish it;
3. once the new record is seen through the configured resolver
   (mailhost/dns.py), with the right key, the new key signs and the old one
   is retired -- mail is never signed with a key receivers cannot find;
4. the retired key stays published for MAILHOST_DKIM_GRACE_DAYS (mail signed
   with it may still be queued or in transit, RFC 6376 §3.6.1 and M3AAWG's
   rotation advice), then its record is withdrawn and its private key destroyed.
Every step is recorded in the audit log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.directory import dnspublish
from apps.directory.audit import Actor, record
from apps.directory.dns import dkim_record
from apps.directory.dns_check import Status, check_record
from apps.directory.models import DkimKey, Domain
from apps.directory.services import create_dkim_key

log = logging.getLogger(__name__)


def rotate_all(*, now: datetime | None = None) -> None:
    """One rotation step for every active domain. Beat sends it through
    apps.store.tasks.run_periodic, whose lease makes one node at a time run it."""
    for domain in Domain.objects.filter(active=True):
        rotate(domain, now=now)


def rotate(domain: Domain, *, now: datetime | None = None, actor: Actor | None = None) -> None:
    """Take whichever steps of the cycle are due for ``domain``; doing it
    again at once does nothing more."""
    now = now or timezone.now()
    keys = list(domain.dkim_keys.filter(active=True))
    dns_changed = _start(domain, keys, now, actor) | _withdraw(domain, keys, now, actor)
    waiting = list(domain.dkim_keys.filter(active=True, signing_since__isnull=True))
    if (dns_changed or waiting) and dnspublish.target_of(domain) is not None:
        try:
            dnspublish.apply(domain, actor=actor)
        except dnspublish.PublishError as error:
            # The next run tries again; the new key does not sign meanwhile.
            log.warning("could not publish the DKIM records of %s: %s", domain.name, error)
    for key in waiting:
        if check_record(dkim_record(domain.name, key)).status == Status.OK:
            _sign_with(key, now, actor)


def _start(domain: Domain, keys: list[DkimKey], now: datetime, actor: Actor | None) -> bool:
    """Step 1: a successor for each signing key that is due."""
    days = settings.MAILHOST_DKIM_ROTATE_DAYS
    if days <= 0:
        return False
    started = False
    waiting = {key.algorithm for key in keys if key.signing_since is None}
    for key in keys:
        due = (key.signing_since is not None and key.retired is None
               and key.signing_since + timedelta(days=days) <= now)
        if due and key.algorithm not in waiting:
            with transaction.atomic():
                new = create_dkim_key(domain, key.algorithm, signing=False)
                record(actor, "rotate", "dkim key", str(new), domain_name=domain.name,
                       changes={"step": "new key made, published before it signs",
                                "replaces": key.selector})
            waiting.add(key.algorithm)
            started = True
    return started


def _sign_with(key: DkimKey, now: datetime, actor: Actor | None) -> None:
    """Step 3: the new key's record is visible; it signs, its predecessor retires."""
    with transaction.atomic():
        retiring = list(DkimKey.objects.select_for_update().filter(
            domain_id=key.domain_id, algorithm=key.algorithm, active=True,
            signing_since__isnull=False, retired__isnull=True))
        DkimKey.objects.filter(pk__in=[old.pk for old in retiring]).update(retired=now)
        DkimKey.objects.filter(pk=key.pk).update(signing_since=now)
        record(actor, "rotate", "dkim key", str(key), domain_name=key.domain.name,
               changes={"step": "record seen in DNS, signs from now",
                        "retired": [old.selector for old in retiring]})


def _withdraw(domain: Domain, keys: list[DkimKey], now: datetime, actor: Actor | None) -> bool:
    """Step 4: retired keys past their grace period."""
    grace = timedelta(days=settings.MAILHOST_DKIM_GRACE_DAYS)
    withdrawn = False
    for key in keys:
        if key.retired is not None and key.retired + grace <= now:
            with transaction.atomic():
                DkimKey.objects.filter(pk=key.pk).update(active=False, private_key="",
                                                         withdrawn=now)
                record(actor, "rotate", "dkim key", str(key), domain_name=domain.name,
                       changes={"step": "grace period over: record withdrawn, "
                                        "private key destroyed"})
            withdrawn = True
    return withdrawn


def state(key: DkimKey) -> str:
    """Where ``key`` is in the cycle, for the DNS page and ``dnsrecords``."""
    if not key.active:
        return "withdrawn"
    if key.signing_since is None:
        return "waiting to be seen in DNS before it signs"
    if key.retired is not None:
        until = key.retired + timedelta(days=settings.MAILHOST_DKIM_GRACE_DAYS)
        return f"retired, published until {until:%Y-%m-%d %H:%M} UTC"
    return "signing"
