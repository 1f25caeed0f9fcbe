"""The DNS page against a real DNS server on 127.0.0.1 answering some records
right, some wrong and some not at all."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from apps.directory.dns import dns_records, zone_lines
from apps.directory.models import Domain
from apps.webadmin.dns_check import Status, check_records
from tests.dns_server import Records, TinyDnsServer

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
    settings.MAILHOST_DNS_RESOLVER = "mailhost.dns.DnsPythonResolver"
    settings.MAILHOST_DNS_NAMESERVERS = ["127.0.0.1"]
    settings.MAILHOST_DNS_PORT = server.port
    settings.MAILHOST_DNS_TIMEOUT = 2
    yield server
    server.close()


def test_each_record_is_marked_published_missing_or_different(dns_zone, ours):
    checks = check_records(dns_records(ours, mail_host=MAIL_HOST))
    statuses = {check.record.name.split(".")[0] + ":" + check.record.value[:6]: check.status
                for check in checks}
    assert list(statuses.values()) == [Status.OK, Status.DIFFERENT, Status.OK, Status.OK,
                                       Status.MISSING]
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


def test_the_page_shows_records_statuses_and_what_was_found(dns_zone, root_client, ours):
    page = root_client.get(f"/manage/domains/{ours.pk}/dns/").content.decode()
    assert re.findall(r'<span class="badge (\w+)">', page) == ["ok", "warn", "ok", "ok", "bad"]
    assert "Found: <span class=\"mono\">v=spf1 a ~all</span>" in page
    assert f"_dmarc.{ours.name}" in page and "v=DMARC1; p=quarantine" in page
    assert f"{ours.name}.\t3600\tIN\tMX\t10 {MAIL_HOST}." in page  # the zone-file lines
