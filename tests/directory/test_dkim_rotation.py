"""DKIM key rotation against Knot DNS: the new key is published first, signs
only once its record is seen through the configured resolver, and the old one
is withdrawn after the grace period. Time moves by the ``now`` given to each
step, never by sleeping. Signatures are checked by dkimpy against Knot."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import dkim
import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.delivery.services import sign
from apps.directory import dkim_rotation, dnspublish
from apps.directory.dns import dkim_record, zone_lines
from apps.directory.models import AuditEntry, DkimKey, Domain
from apps.directory.tasks import rotate_dkim_keys
from mailhost.dns import query
from tests.conftest import FOREIGN_TXT
from tests.dns_server import TinyDnsServer
from tests.knot_server import ALGORITHM, KEY_NAME, KnotServer

pytestmark = pytest.mark.django_db

MESSAGE = (b"From: alice@ours.example\r\nTo: bob@elsewhere.example\r\n"
           b"Subject: rotation\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <r1@ours.example>\r\n\r\nSigned with whichever key signs now.\r\n")


@pytest.fixture(autouse=True)
def _schedule(settings) -> None:
    settings.MAILHOST_DKIM_ROTATE_DAYS = 90
    settings.MAILHOST_DKIM_GRACE_DAYS = 7


def later(days: float) -> datetime:
    return timezone.now() + timedelta(days=days)


def knot_txt(name: bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's dnsfunc: the TXT record as Knot answers it, through the
    configured resolver (which the ``knot`` fixture points at Knot)."""
    answers = query(name.decode().rstrip("."), "TXT")
    return answers[0].encode() if answers else None


def signed_selectors(domain: Domain) -> list[str]:
    """The selectors of each signature of an outbound message, each verified
    by dkimpy against Knot's records."""
    message = sign(MESSAGE, domain.name)
    selectors = re.findall(rb"\bs=([a-z0-9]+);", message)
    for index in range(len(selectors)):
        assert dkim.DKIM(message).verify(idx=index, dnsfunc=knot_txt), selectors[index]
    return sorted(s.decode() for s in selectors)


def selectors(domain: Domain, **filters: object) -> list[str]:
    return sorted(domain.dkim_keys.filter(**filters).values_list("selector", flat=True))


def published(knot: KnotServer, key: DkimKey) -> bool:
    return bool(knot.query(f"{key.selector}._domainkey.{key.domain.name}", "TXT"))


def steps(domain: Domain) -> list[str]:
    return [entry.changes["step"] for entry in AuditEntry.objects.filter(
        action="rotate", domain_name=domain.name).order_by("when", "pk")]


def test_the_whole_cycle_with_publishing(knot, ours, settings):
    dnspublish.set_target(ours, server="127.0.0.1", port=knot.port, key_name=KEY_NAME,
                          algorithm=ALGORITHM, secret=knot.secret)
    dnspublish.apply(ours)
    old = list(ours.dkim_keys.all())
    assert signed_selectors(ours) == sorted(key.selector for key in old)

    # Not due yet: nothing happens.
    dkim_rotation.rotate(ours, now=later(30))
    assert ours.dkim_keys.count() == 2 and steps(ours) == []

    # Due, but the resolver does not see the zone yet (a cache, a slow
    # secondary): the new keys are published at the primary and wait.
    elsewhere = TinyDnsServer({})
    real_port, settings.MAILHOST_DNS_PORT = settings.MAILHOST_DNS_PORT, elsewhere.port
    try:
        dkim_rotation.rotate(ours, now=later(91))
    finally:
        elsewhere.close()
        settings.MAILHOST_DNS_PORT = real_port
    new = list(ours.dkim_keys.filter(signing_since__isnull=True))
    assert len(new) == 2 and {k.algorithm for k in new} == {k.algorithm for k in old}
    assert all(published(knot, key) for key in [*old, *new])
    assert signed_selectors(ours) == sorted(key.selector for key in old)

    # Seen: the new keys sign, the old ones are retired but stay published.
    dkim_rotation.rotate(ours, now=later(91.1))
    assert signed_selectors(ours) == sorted(key.selector for key in new)
    assert selectors(ours, retired__isnull=False) == sorted(key.selector for key in old)
    assert all(published(knot, key) for key in old)
    dkim_rotation.rotate(ours, now=later(95))  # within the grace period: nothing changes
    assert all(published(knot, key) for key in old)

    # Grace over: the old records are withdrawn and their private keys destroyed.
    dkim_rotation.rotate(ours, now=later(99))
    for key in old:
        key.refresh_from_db()
        assert not key.active and key.private_key == "" and key.withdrawn
        assert not published(knot, key)
    assert all(published(knot, key) for key in new)
    assert FOREIGN_TXT in knot.query("ours.example", "TXT")
    assert signed_selectors(ours) == sorted(key.selector for key in new)
    assert dnspublish.plan(ours).changes == []
    assert steps(ours) == [
        *["new key made, published before it signs"] * 2,
        *["record seen in DNS, signs from now"] * 2,
        *["grace period over: record withdrawn, private key destroyed"] * 2]
    # The zone changes were logged as such, too.
    assert AuditEntry.objects.filter(action="withdraw", object_type="dns record",
                                     object_repr__startswith=f"{old[0].selector}.").exists()

    # The next rotation is due 90 days after the new keys began to sign.
    dkim_rotation.rotate(ours, now=later(170))
    assert ours.dkim_keys.filter(signing_since__isnull=True).count() == 0
    dkim_rotation.rotate(ours, now=later(182))
    assert ours.dkim_keys.filter(active=True).count() == 4


def test_without_publishing_rotation_waits_for_the_record_to_be_pasted(knot, ours):
    # The current keys were published by hand.
    for key in ours.dkim_keys.all():
        paste(knot, key)
    (old_rsa,) = ours.dkim_keys.filter(algorithm="rsa-sha256")

    dkim_rotation.rotate(ours, now=later(91))
    dkim_rotation.rotate(ours, now=later(92))
    new = list(ours.dkim_keys.filter(signing_since__isnull=True))
    assert len(new) == 2
    old_selectors = sorted(set(selectors(ours)) - {key.selector for key in new})
    assert signed_selectors(ours) == old_selectors
    # dnsrecords shows what to paste, and why.
    out = io.StringIO()
    call_command("dnsrecords", ours.name, stdout=out)
    for key in new:
        assert f"{key.selector}._domainkey.ours.example.\t3600\tIN\tTXT" in out.getvalue()
        assert f"; {key}: waiting to be seen in DNS before it signs" in out.getvalue()

    # The administrator pastes one of the two: that one signs, the other waits.
    (new_rsa,) = [key for key in new if key.algorithm == "rsa-sha256"]
    paste(knot, new_rsa)
    dkim_rotation.rotate(ours, now=later(93))
    assert signed_selectors(ours) == sorted(
        [new_rsa.selector, *(s for s in old_selectors if s != old_rsa.selector)])
    out = io.StringIO()
    call_command("dnsrecords", ours.name, stdout=out)
    assert f"; {old_rsa}: retired, published until" in out.getvalue()

    dkim_rotation.rotate(ours, now=later(101))
    old_rsa.refresh_from_db()
    assert old_rsa.withdrawn and old_rsa.private_key == ""
    out = io.StringIO()
    call_command("dnsrecords", ours.name, stdout=out)
    assert f"{old_rsa}." not in out.getvalue()


def test_a_half_published_record_is_not_taken_for_the_key(knot, ours):
    """Seen means the right key at the selector: a truncated paste waits."""
    for key in ours.dkim_keys.all():
        paste(knot, key)
    dkim_rotation.rotate(ours, now=later(91))
    (new_rsa,) = ours.dkim_keys.filter(signing_since__isnull=True, algorithm="rsa-sha256")
    knot.edit(add=(f"{new_rsa.selector}._domainkey.ours.example.", "TXT",
                   f'"v=DKIM1; k=rsa; p={new_rsa.public_key[:100]}"'))
    dkim_rotation.rotate(ours, now=later(92))
    new_rsa.refresh_from_db()
    assert new_rsa.signing_since is None


def test_the_beat_task_steps_every_domain(knot, ours, theirs):
    for key in DkimKey.objects.all():
        key.signing_since = later(-100)
        key.save()
    rotate_dkim_keys()
    assert DkimKey.objects.filter(signing_since__isnull=True).count() == 4
    rotate_dkim_keys()  # idempotent: nothing more until the records are seen
    assert DkimKey.objects.count() == 8


def paste(knot: KnotServer, key: DkimKey) -> None:
    """What an administrator pastes at a DNS provider: dnsrecords' line."""
    (line,) = zone_lines([dkim_record(key.domain.name, key)])
    name, _ttl, _class, rtype, data = line.split("\t")
    knot.edit(add=(name, rtype, data))
