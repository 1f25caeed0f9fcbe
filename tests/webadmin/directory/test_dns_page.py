"""The DNS page against a real DNS server on 127.0.0.1 answering some records
right, some wrong and some not at all."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from apps.directory import dnspublish
from apps.directory.dns import dns_records, zone_lines
from apps.directory.dns_check import PARALLEL_LOOKUPS, Status, check_records
from apps.directory.models import Domain
from tests.conftest import resolve_through
from tests.dns_server import Records, TinyDnsServer
from tests.knot_server import ALGORITHM, KEY_NAME

MAIL_HOST = "mx.hosting.example"


def zone_for(domain: Domain) -> Records:
    """The domain's MX and DKIM keys published right, SPF published wrong,
    DMARC missing; an unrelated TXT record beside the SPF one."""
    records: Records = {}
    for record, line in zip(dns_records(domain, mail_host=MAIL_HOST),
                            zone_lines(dns_records(domain, mail_host=MAIL_HOST)), strict=True):
        name = record.name + "."
        data = line.split("\t")[-1]
        if record.name.startswith("_dmarc."):
            continue
        if record.value.startswith("v=spf1"):
            data = '"v=spf1 a ~all"'
            records.setdefault((name, "TXT"), []).append('"site-verification=abc"')
        records.setdefault((name, record.type), []).append(data)
    return records


@pytest.fixture
def dns_zone(settings, ours: Domain) -> Iterator[TinyDnsServer]:
    server = TinyDnsServer(zone_for(ours))
    settings.MAILHOST_HOSTNAME = MAIL_HOST
    resolve_through(settings, server.port)
    yield server
    server.close()


def test_each_record_is_marked_published_missing_or_different(dns_zone, ours):
    checks = check_records(dns_records(ours, mail_host=MAIL_HOST))
    statuses = {check.record.name.split(".")[0] + ":" + check.record.value[:6]: check.status
                for check in checks}
    assert list(statuses.values())[:5] == [Status.OK, Status.DIFFERENT, Status.OK, Status.OK,
                                           Status.MISSING]
    # The client SRV records, autoconfiguration names, MTA-STS and TLSRPT.
    assert set(list(statuses.values())[5:]) == {Status.OK}
    assert len(checks) == 5 + 11
    spf = checks[1]
    assert spf.found == ["v=spf1 a ~all"]  # the site verification record is not SPF


def test_a_different_dkim_key_and_a_failed_lookup(dns_zone, ours):
    records = dns_records(ours, mail_host=MAIL_HOST)
    dkim = records[2]
    dns_zone.records[(dkim.name + ".", "TXT")] = ['"v=DKIM1; k=rsa; p=AAAA"']
    broken = type(dkim)("TXT", "x.broken", dkim.value, "test")
    checks = check_records([dkim, broken])
    assert checks[0].status == Status.DIFFERENT and checks[0].found == ["v=DKIM1; k=rsa; p=AAAA"]
    assert checks[1].status == Status.UNKNOWN


def test_client_and_mta_sts_records_published_wrong(dns_zone, ours):
    records = {record.name: record for record in dns_records(ours, mail_host=MAIL_HOST)}
    imaps = records[f"_imaps._tcp.{ours.name}"]
    dns_zone.records[(imaps.name + ".", "SRV")] = [f"0 1 1993 {MAIL_HOST}."]  # a dev port
    autoconfig = records[f"autoconfig.{ours.name}"]
    dns_zone.records[(autoconfig.name + ".", "CNAME")] = ["elsewhere.example."]
    sts = records[f"_mta-sts.{ours.name}"]
    dns_zone.records[(sts.name + ".", "TXT")] = ['"v=STSv1; id=old"']
    tlsrpt = records[f"_smtp._tls.{ours.name}"]
    del dns_zone.records[(tlsrpt.name + ".", "TXT")]
    checks = check_records([imaps, autoconfig, sts, tlsrpt, records[f"_imap._tcp.{ours.name}"]])
    assert [c.status for c in checks] == [Status.DIFFERENT, Status.DIFFERENT, Status.DIFFERENT,
                                          Status.MISSING, Status.OK]
    assert checks[0].found == [f"0 1 1993 {MAIL_HOST}."]
    assert checks[1].found == ["elsewhere.example"]


def test_the_page_shows_records_statuses_and_what_was_found(dns_zone, root_client, ours):
    page = root_client.get(f"/manage/domains/{ours.pk}/dns/").content.decode()
    badges = re.findall(r'<span class="badge (\w+)">', page)
    assert badges[:5] == ["ok", "warn", "ok", "ok", "bad"] and set(badges[5:]) == {"ok"}
    assert "Found: <span class=\"mono\">v=spf1 a ~all</span>" in page
    assert f"_dmarc.{ours.name}" in page and "v=DMARC1; p=quarantine" in page
    assert f"{ours.name}.\t3600\tIN\tMX\t10 {MAIL_HOST}." in page  # the zone-file lines


class _MeetingResolver:
    """Answers no lookup until all of a page's lookups are waiting at once: a
    check that asks one record after another never gets past the first."""

    meeting: threading.Barrier

    def query(self, name: str, rdtype: str) -> list[str]:
        self.meeting.wait()
        return []


def test_the_records_are_looked_up_at_once(settings, ours):
    records = dns_records(ours, mail_host=MAIL_HOST)
    _MeetingResolver.meeting = threading.Barrier(min(len(records), PARALLEL_LOOKUPS), timeout=10)
    settings.MAILHOST_DNS_RESOLVER = f"{__name__}._MeetingResolver"
    checks = check_records(records)
    assert [check.record for check in checks] == records  # in the page's order
    assert {check.status for check in checks} == {Status.MISSING}


def test_a_domain_admin_sees_the_changes_but_only_a_superadmin_publishes(
        knot, ours, boss_client):
    dnspublish.set_target(ours, server="127.0.0.1", port=knot.port, key_name=KEY_NAME,
                          algorithm=ALGORITHM, secret=knot.secret)
    page = boss_client.get(f"/manage/domains/{ours.pk}/dns/").content.decode()
    assert "10 mx.hosting.example." in page and "A superadmin applies these changes." in page
    assert "Save target" not in page and knot.secret not in page
    assert boss_client.post(f"/manage/domains/{ours.pk}/dns/publish/").status_code == 404
    assert boss_client.post(f"/manage/domains/{ours.pk}/dns/target/", {
        "server": "192.0.2.1", "port": "53", "key_name": "k.", "algorithm": ALGORITHM,
    }).status_code == 404
    assert knot.query("ours.example", "MX") == []
