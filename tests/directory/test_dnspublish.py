"""Publishing a domain's records to Knot DNS by TSIG-signed RFC 2136 updates:
what the server holds afterwards, as dnspython queries it."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.management import CommandError, call_command

from apps.directory import dnspublish
from apps.directory.models import AuditEntry, DnsUpdateTarget, Domain
from apps.directory.tasks import publish_dns
from tests.conftest import FOREIGN_TXT
from tests.knot_server import ALGORITHM, KEY_NAME, KnotServer

pytestmark = pytest.mark.django_db


def target(domain: Domain, knot: KnotServer, secret: str | None = None) -> DnsUpdateTarget:
    return dnspublish.set_target(domain, server="127.0.0.1", port=knot.port, key_name=KEY_NAME,
                                 algorithm=ALGORITHM, secret=secret or knot.secret)


def dnspublish_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("dnspublish", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_dry_run_prints_the_changes_and_changes_nothing(knot, ours):
    target(ours, knot)
    out, _ = dnspublish_command(ours.name, "--dry-run")
    assert "+ ours.example. 3600 IN MX 10 mx.hosting.example." in out
    assert '+ ours.example. 3600 IN TXT "v=spf1 mx -all"' in out
    for key in ours.dkim_keys.all():
        assert f"+ {key.selector}._domainkey.ours.example. 3600 IN TXT" in out
    assert "_imaps._tcp.ours.example. 3600 IN SRV 0 1 993" in out
    assert knot.query("ours.example", "MX") == []
    assert knot.query("ours.example", "TXT") == [FOREIGN_TXT]


def test_apply_creates_the_records_and_leaves_foreign_ones_alone(knot, ours):
    target(ours, knot)
    out, _ = dnspublish_command(ours.name)
    assert "changes made at 127.0.0.1" in out
    assert knot.query("ours.example", "MX") == ["10 mx.hosting.example."]
    # Our SPF beside the site verification, which stays.
    assert knot.query("ours.example", "TXT") == sorted([FOREIGN_TXT, '"v=spf1 mx -all"'])
    assert knot.query("www.ours.example", "A") == ["192.0.2.80"]
    assert knot.query("_dmarc.ours.example", "TXT") == [
        '"v=DMARC1; p=quarantine; adkim=r; aspf=r"']
    for key in ours.dkim_keys.all():
        (record,) = knot.query(f"{key.selector}._domainkey.ours.example", "TXT")
        assert base64.b64decode(key.public_key)  # the p= value, split in 255-octet strings
        assert key.public_key in record.replace('" "', "").replace('"', "")
    assert knot.query("autoconfig.ours.example", "CNAME")
    assert knot.query("_smtp._tls.ours.example", "TXT")
    # Every applied change is in the audit log.
    published = AuditEntry.objects.filter(action="publish", object_type="dns record",
                                          domain_name="ours.example")
    assert published.filter(object_repr__startswith="ours.example. MX 10 mx").exists()
    assert published.count() == out.count("\n+ ") + out.startswith("+ ")
    # A second run has nothing to do.
    assert dnspublish_command(ours.name)[0] == "ours.example: the zone is up to date\n"


def test_a_hand_edit_is_drift_and_the_next_apply_puts_it_back(knot, ours):
    target(ours, knot)
    dnspublish.apply(ours)
    knot.edit(delete=("_dmarc.ours.example.", "TXT"),
              add=("_dmarc.ours.example.", "TXT", '"v=DMARC1; p=none"'))
    knot.edit(delete=("ours.example.", "MX"), add=("ours.example.", "MX", "5 elsewhere.example."))

    out, err = dnspublish_command(ours.name, "--dry-run")
    assert "drift: _dmarc.ours.example. TXT was changed outside Mailhost" in err
    assert '"v=DMARC1; p=none"' in err
    assert "drift: ours.example. MX" in err and "5 elsewhere.example." in err
    assert '- _dmarc.ours.example. 3600 IN TXT "v=DMARC1; p=none"' in out
    assert "- ours.example. 3600 IN MX 5 elsewhere.example." in out

    dnspublish.apply(ours)
    assert knot.query("ours.example", "MX") == ["10 mx.hosting.example."]
    assert knot.query("_dmarc.ours.example", "TXT") == [
        '"v=DMARC1; p=quarantine; adkim=r; aspf=r"']
    assert dnspublish.plan(ours).drift == []
    assert AuditEntry.objects.filter(
        action="withdraw", object_repr="ours.example. MX 5 elsewhere.example.").exists()


def test_a_change_between_reading_and_updating_is_not_overwritten(knot, ours):
    """RFC 2136 §2.4 prerequisites: the update holds only if the zone is as read."""
    target(ours, knot)
    update_plan = dnspublish.plan(ours)
    knot.edit(add=("ours.example.", "MX", "20 backup.example."))
    with pytest.raises(dnspublish.PublishError, match="zone changed"):
        dnspublish._send(update_plan.target, update_plan)
    assert knot.query("ours.example", "MX") == ["20 backup.example."]
    assert knot.query("ours.example", "TXT") == [FOREIGN_TXT]


def test_a_wrong_tsig_key_is_refused_with_a_clear_error(knot, ours):
    target(ours, knot, secret=base64.b64encode(b"not the key at all, 32 octets!!!").decode())
    with pytest.raises(CommandError, match=r"refused TSIG key mailhost-update\."):
        dnspublish_command(ours.name)
    assert knot.query("ours.example", "MX") == []
    assert not AuditEntry.objects.filter(action="publish").exists()


def test_the_secret_is_sealed_or_comes_from_the_setting(knot, ours, settings):
    stored = target(ours, knot)
    assert knot.secret not in stored.sealed_secret
    dnspublish.set_target(ours, server="127.0.0.1", port=knot.port, key_name=KEY_NAME,
                          algorithm=ALGORITHM, secret="")
    with pytest.raises(dnspublish.PublishError, match="no secret for TSIG key"):
        dnspublish.plan(ours)
    settings.MAILHOST_DNS_TSIG_KEYS = f"other:c2VjcmV0,{ALGORITHM}:{KEY_NAME}:{knot.secret}"
    assert dnspublish.plan(ours).changes


def test_beat_keeps_the_zone_current_and_logs_the_drift_it_undoes(knot, ours, theirs):
    target(ours, knot)
    dnspublish.set_target(theirs, server="127.0.0.1", port=knot.port, key_name=KEY_NAME,
                          algorithm=ALGORITHM, secret=knot.secret)  # not in Knot's zone
    publish_dns()
    assert knot.query("ours.example", "MX") == ["10 mx.hosting.example."]
    knot.edit(delete=("ours.example.", "MX"))
    publish_dns()
    assert knot.query("ours.example", "MX") == ["10 mx.hosting.example."]
    (drift,) = AuditEntry.objects.filter(action="drift", domain_name="ours.example")
    assert drift.object_repr == "ours.example. MX"
    assert drift.changes == {"published": ["10 mx.hosting.example."], "found": []}
    assert not AuditEntry.objects.filter(domain_name="theirs.example", action="publish").exists()
