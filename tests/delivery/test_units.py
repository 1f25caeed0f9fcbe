"""Pure parts of delivery: line ends, the transport map, RFC 3461 parameters, the DSN
builder, and the DNS records a domain needs."""

from __future__ import annotations

import email
import email.policy
import tracemalloc
from datetime import UTC, datetime

import dns.zone
import pytest
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

from apps.delivery.client import only_crlf_line_ends
from apps.delivery.dsn import (
    RecipientReport,
    build_dsn,
    parse_notify,
    parse_orcpt,
    xtext_decode,
    xtext_encode,
)
from apps.delivery.transports import Route, parse_transports, route_for
from apps.directory.dns import DnsRecord, zone_lines
from apps.directory.services import create_dkim_key
from mailhost.errors import Invalid
from tests.factories import make_domain


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b" ", b"."]), max_size=30))
def test_only_crlf_line_ends_finds_every_bare_cr_and_lf(pieces):
    data = b"".join(pieces)
    # RFC 5321 §2.3.8, byte by byte: each CR is followed by LF, each LF follows CR.
    bare = any((byte == 13 and data[i + 1:i + 2] != b"\n")
               or (byte == 10 and (i == 0 or data[i - 1] != 13))
               for i, byte in enumerate(data))
    assert only_crlf_line_ends(data) is not bare


def test_transport_map_entries_and_smarthost():
    routes = parse_transports(
        "example.net=127.0.0.1:2626, *=smtp.relay.test:587;tls=require;auth=u:p:w,"
        "v6.test=[::1]:25,bare.test=relay.test", default_port=25)
    assert routes["example.net"] == Route("127.0.0.1", 2626)
    assert routes["*"] == Route("smtp.relay.test", 587, "require", "u", "p:w")
    assert routes["v6.test"] == Route("::1", 25)
    assert routes["bare.test"] == Route("relay.test", 25)
    assert route_for(routes, "EXAMPLE.NET").port == 2626
    assert route_for(routes, "other.test").host == "smtp.relay.test"
    assert route_for(parse_transports(""), "other.test") is None


@pytest.mark.parametrize("bad", ["example.net", "example.net=", "x=h:port", "x=h:70000",
                                 "x=h:25;tls=maybe", "=h:25"])
def test_transport_map_refuses_malformed_entries(bad):
    with pytest.raises(Invalid):
        parse_transports(bad)


@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127)))
def test_xtext_round_trip(text):
    encoded = xtext_encode(text)
    assert all("!" <= c <= "~" and c != "=" for c in encoded)
    assert xtext_decode(encoded) == text


def _is_xtext(text: str) -> bool:
    """RFC 3461 §4's grammar, one character at a time."""
    i = 0
    while i < len(text):
        if text[i] == "+":
            if not all(c in "0123456789ABCDEF" for c in text[i + 1:i + 3]) or i + 3 > len(text):
                return False
            i += 3
        elif "!" <= text[i] <= "~" and text[i] != "=":
            i += 1
        else:
            return False
    return True


@given(st.text(alphabet="+=AF09az!~ \x7f\xe9", max_size=12))
def test_xtext_is_told_from_what_is_not(text):
    if _is_xtext(text):
        xtext_decode(text)
    else:
        with pytest.raises(Invalid):
            xtext_decode(text)


def test_a_long_xtext_value_is_decoded_in_bounded_memory():
    # Found by bench/fuzz.py: 116 MiB to check a 1 MB value.
    tracemalloc.start()
    try:
        assert xtext_decode("+41" * 100_000 + "a") == "A" * 100_000 + "a"
        with pytest.raises(Invalid):
            xtext_decode("a" * 300_000 + "=")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_rfc3461_parameters():
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert parse_notify("failure,delay") == "FAILURE,DELAY"
    assert parse_notify("NEVER") == "NEVER"
    assert parse_orcpt("RFC822;a+2Bb@x.test") == "rfc822;a+b@x.test"
    for bad in ("NEVER,FAILURE", "SOMETIMES", "FAILURE,FAILURE"):
        with pytest.raises(Invalid):
            parse_notify(bad)
    for bad in ("rfc822", ";x", "rfc822;a=b"):
        with pytest.raises(Invalid):
            parse_orcpt(bad)


def test_dsn_structure():
    original = b"From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n"
    when = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    raw = build_dsn(
        reporting_mta="mx.test", recipient="a@x.test", original=original,
        reports=[RecipientReport("b@y.test", "failed", "5.1.1", diagnostic="550 5.1.1 no\r\n x",
                                 remote_mta="mx.y.test", last_attempt=when)],
        ret="", envid="", arrival=when, now=when)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    report = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert report["To"] == "<a@x.test>"
    _text, status, returned = report.get_payload()
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.test"
    assert per_message["Original-Envelope-Id"] is None
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no x"
    assert per_recipient["Last-Attempt-Date"] == "Thu, 26 Nov 2026 10:00:00 +0000"
    assert returned.get_payload()[0]["Subject"] == "hi"


def test_zone_lines_are_valid_zone_file_lines():
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 392
    lines = zone_lines([
        DnsRecord("MX", "example.org", "mail.example.org.", "mx", priority=10),
        DnsRecord("TXT", "example.org", "v=spf1 mx -all", "spf"),
        DnsRecord("TXT", "mh202611._domainkey.example.org", long_value, "dkim"),
    ])
    assert len(lines) == 3 and all(line.split()[0].endswith(".org.") for line in lines)
    zone = dns.zone.from_text("\n".join(lines), origin="example.org.", relativize=False,
                              check_origin=False)
    mx = zone.find_rdataset("example.org.", "MX")[0]
    assert (mx.preference, mx.exchange.to_text()) == (10, "mail.example.org.")
    spf = zone.find_rdataset("example.org.", "TXT")[0]
    assert spf.strings == (b"v=spf1 mx -all",)
    dkim_txt = zone.find_rdataset("mh202611._domainkey.example.org.", "TXT")[0]
    # RFC 6376 §3.6.2.2: a long key is split into strings of at most 255 octets.
    assert len(dkim_txt.strings) == 2 and all(len(s) <= 255 for s in dkim_txt.strings)
    assert b"".join(dkim_txt.strings) == long_value.encode()
    with pytest.raises(ValueError, match="AAAA"):
        zone_lines([DnsRecord("AAAA", "example.org", "::1", "address")])


def test_dnsrecords_command_prints_the_domains_dkim_key(db, settings, capsys):
    settings.MAILHOST_HOSTNAME = "mail.example.org"
    settings.MAILHOST_PUBLIC_HOSTNAME = "imap.example.org"
    domain = make_domain("example.org")
    rsa_key = domain.dkim_keys.get(algorithm="rsa-sha256")
    ed_key = domain.dkim_keys.get(algorithm="ed25519-sha256")
    assert "BEGIN PRIVATE KEY" in rsa_key.private_key
    assert rsa_key.selector != ed_key.selector
    call_command("dnsrecords", "Example.ORG")
    out = capsys.readouterr().out
    zone = dns.zone.from_text(out, origin="example.org.", relativize=False,
                              check_origin=False)
    for key, key_type in ((rsa_key, b"rsa"), (ed_key, b"ed25519")):
        record = zone.find_rdataset(f"{key.selector}._domainkey.example.org.", "TXT")[0]
        assert b"".join(record.strings) == b"v=DKIM1; k=" + key_type + b"; p=" + (
            key.public_key.encode())
    assert zone.find_rdataset("example.org.", "MX")[0].exchange.to_text() == "mail.example.org."
    assert b"".join(zone.find_rdataset("example.org.", "TXT")[0].strings) == b"v=spf1 mx -all"
    dmarc = zone.find_rdataset("_dmarc.example.org.", "TXT")[0]
    assert b"".join(dmarc.strings).startswith(b"v=DMARC1; p=quarantine")
    # RFC 6186 §3.1: the client SRV records, in zone-file syntax dnspython reads.
    imaps = zone.find_rdataset("_imaps._tcp.example.org.", "SRV")[0]
    assert (imaps.priority, imaps.weight, imaps.port, imaps.target.to_text()) == (
        0, 1, 993, "imap.example.org.")
    submission = zone.find_rdataset("_submission._tcp.example.org.", "SRV")[0]
    assert submission.port == 587
    autoconfig = zone.find_rdataset("autoconfig.example.org.", "CNAME")[0]
    assert autoconfig.target.to_text() == "imap.example.org."
    assert b"".join(zone.find_rdataset("_smtp._tls.example.org.", "TXT")[0].strings) == (
        b"v=TLSRPTv1; rua=mailto:postmaster@example.org")
    assert len(out.strip().splitlines()) == 5 + 11
    assert "PRIVATE" not in out and ed_key.private_key not in out
    with pytest.raises(CommandError):
        call_command("dnsrecords", "unknown.example")


def test_dnsrecords_publishes_a_rotated_key_beside_its_successor(db, settings, capsys):
    settings.MAILHOST_HOSTNAME = "mail.example.org"
    domain = make_domain("example.org")
    new_key = create_dkim_key(domain)
    retired = domain.dkim_keys.get(algorithm="ed25519-sha256")
    retired.active = False
    retired.save()
    call_command("dnsrecords", "example.org")
    out = capsys.readouterr().out
    zone = dns.zone.from_text(out, origin="example.org.", relativize=False,
                              check_origin=False)
    published = {name.to_text() for name in zone.nodes if "_domainkey" in name.to_text()}
    rsa_keys = domain.dkim_keys.filter(algorithm="rsa-sha256")
    assert new_key in rsa_keys and len(rsa_keys) == 2
    assert published == {f"{key.selector}._domainkey.example.org." for key in rsa_keys}
