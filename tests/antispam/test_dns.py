"""The production resolver (dnspython) against a DNS server on 127.0.0.1,
so that the answer shapes the checks rely on are those of real DNS replies."""

import asyncio
from collections.abc import Iterator

import pytest

from apps.antispam import auth
from mailhost import dns
from mailhost.dns import DnsPythonResolver, DnsTemporaryError, NoSuchDomain
from tests.dns_server import TinyDnsServer

RECORDS = {
    ("sender.example.", "TXT"): ['"v=spf1 mx " "-all"'],
    ("sender.example.", "MX"): ["10 mx1.sender.example."],
    ("mx1.sender.example.", "A"): ["192.0.2.10"],
    ("2.0.0.127.bl.test.", "A"): ["127.0.0.2"],
}


@pytest.fixture
def resolver(settings) -> Iterator[DnsPythonResolver]:
    server = TinyDnsServer(RECORDS)
    settings.MAILHOST_DNS_NAMESERVERS = ["127.0.0.1"]
    settings.MAILHOST_DNS_PORT = server.port
    settings.MAILHOST_DNS_TIMEOUT = 2
    yield DnsPythonResolver()
    server.close()


def test_answers_in_the_shapes_the_checks_use(resolver):
    assert resolver.query("sender.example", "TXT") == ["v=spf1 mx -all"]  # strings joined
    assert resolver.query("sender.example", "MX") == ["10 mx1.sender.example"]
    assert resolver.query("2.0.0.127.bl.test", "A") == ["127.0.0.2"]
    assert resolver.query("sender.example", "A") == []  # no data
    with pytest.raises(NoSuchDomain):
        resolver.query("nowhere.example", "TXT")
    with pytest.raises(DnsTemporaryError):
        resolver.query("x.broken", "TXT")


def test_the_async_side_answers_alike(resolver):
    assert asyncio.run(resolver.aquery("sender.example", "MX")) == ["10 mx1.sender.example"]
    assert asyncio.run(resolver.aquery("sender.example", "A")) == []
    with pytest.raises(NoSuchDomain):
        asyncio.run(resolver.aquery("nowhere.example", "MX"))
    with pytest.raises(DnsTemporaryError):
        asyncio.run(resolver.aquery("x.broken", "MX"))


def test_the_seam_answers_nxdomain_as_no_records(settings, resolver):
    settings.MAILHOST_DNS_RESOLVER = "mailhost.dns.DnsPythonResolver"
    assert dns.query("nowhere.example", "TXT") == []
    assert dns.query("sender.example", "TXT") == ["v=spf1 mx -all"]


def test_spf_through_the_real_resolver(settings, resolver):
    settings.MAILHOST_DNS_RESOLVER = "mailhost.dns.DnsPythonResolver"
    assert auth.check_spf("192.0.2.10", "a@sender.example", "mx").result == "pass"
    assert auth.check_spf("192.0.2.99", "a@sender.example", "mx").result == "fail"
    assert auth.check_spf("192.0.2.10", "a@x.broken", "mx").result == "temperror"
