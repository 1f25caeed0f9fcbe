"""SPF, DKIM and DMARC against the fake resolver (no real DNS)."""

import dkim
import pytest

from apps.antispam import auth
from apps.antispam.auth import DkimResult, SpfResult
from tests.antispam.conftest import message

IP = "192.0.2.10"


# --- SPF ----------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "expected"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
    ("v=spf1 ip4:198.51.100.0/24 -all", "fail"),
    ("v=spf1 ip4:198.51.100.0/24 ~all", "softfail"),
    ("v=spf1 ?all", "neutral"),
    ("v=spf1 ip4:198.51.100.0/24 bogus:x -all", "permerror"),
])
def test_spf_results(zone, record, expected):
    zone.add("sender.example", "TXT", record)
    result = auth.check_spf(IP, "alice@sender.example", "mx.sender.example")
    assert (result.result, result.domain) == (expected, "sender.example")


def test_an_spf_record_too_long_to_evaluate_is_a_permerror(zone):
    # Found by bench/fuzz.py: pyspf took 18 s of CPU to expand the macros of a
    # 64 KiB record, which anyone may publish for their own domain.
    padding = "tr:fuzz.e" * 7000
    zone.add("sender.example", "TXT", f"v=spf1 exists:%{{i}}.%{{l1r+-}}.fuzz.exampl{padding}")
    result = auth.check_spf(IP, "alice@sender.example", "mx.sender.example")
    assert result.result == "permerror"
    assert "longer than 4096 octets" in result.explanation
    # An ordinary record next to a long unrelated TXT record still counts.
    zone.add("other.example", "TXT", "x" * 10_000)
    zone.add("other.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    assert auth.check_spf(IP, "alice@other.example", "mx").result == "pass"


def test_spf_none_without_a_record(zone):
    assert auth.check_spf(IP, "alice@sender.example", "mx").result == "none"


def test_spf_temperror_when_dns_fails(zone):
    zone.fail("sender.example", "TXT")
    assert auth.check_spf(IP, "alice@sender.example", "mx").result == "temperror"


def test_spf_follows_include_and_a_mechanisms(zone):
    zone.add("sender.example", "TXT", "v=spf1 include:_spf.provider.example -all")
    zone.add("_spf.provider.example", "TXT", "v=spf1 a:out.provider.example -all")
    zone.add("out.provider.example", "A", IP)
    assert auth.check_spf(IP, "alice@sender.example", "mx").result == "pass"


def test_spf_null_sender_checks_the_helo_identity(zone):
    # RFC 7208 §2.4: MAIL FROM:<> is checked as postmaster@HELO.
    zone.add("mx.sender.example", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    result = auth.check_spf(IP, "", "mx.sender.example")
    assert (result.result, result.domain) == ("pass", "mx.sender.example")


# --- DKIM ---------------------------------------------------------------------------


def test_dkim_pass_for_a_signature_made_by_dkimpy(zone, dkim_signer):
    signed = dkim_signer("sender.example").sign(message())
    assert auth.verify_dkim(signed) == [DkimResult("pass", "sender.example", "test")]


def test_dkim_fail_when_the_body_was_changed(zone, dkim_signer):
    signed = dkim_signer("sender.example").sign(message())
    tampered = signed.replace(b"See you at noon.", b"Wire the money.")
    assert auth.verify_dkim(tampered)[0].result == "fail"


def test_dkim_fail_when_the_published_key_is_another(zone, dkim_signer):
    signed = dkim_signer("sender.example").sign(message())
    other = dkim_signer("other.example")
    zone.replace("test._domainkey.sender.example", "TXT",
                 *zone.get(f"test._domainkey.{other.domain}", "TXT"))
    assert auth.verify_dkim(signed)[0].result == "fail"


def test_dkim_temperror_and_missing_key(zone, dkim_signer):
    signed = dkim_signer("sender.example").sign(message())
    zone.fail("test._domainkey.sender.example", "TXT")
    assert auth.verify_dkim(signed)[0].result == "temperror"
    zone.replace("test._domainkey.sender.example", "TXT")
    assert auth.verify_dkim(signed)[0].result == "permerror"  # RFC 6376 §6.1.2: no key


def test_unsigned_message_has_no_dkim_results(zone):
    assert auth.verify_dkim(message()) == []


# --- DMARC --------------------------------------------------------------------------


def test_parse_dmarc_record():
    record = auth.parse_dmarc_record("v=DMARC1; p=reject; sp=none; pct=50; adkim=s")
    assert record == auth.DmarcRecord("reject", "none", 50, "s", "r")
    assert auth.parse_dmarc_record("p=reject; v=DMARC1") is None  # v must come first
    assert auth.parse_dmarc_record("v=DMARC1; p=bogus") is None
    assert auth.parse_dmarc_record("v=DMARC1; p=bogus; rua=mailto:a@b.example").policy == "none"


def test_organizational_domain_uses_the_public_suffix_list():
    assert auth.organizational_domain("mail.corp.example.co.uk") == "example.co.uk"
    assert auth.organizational_domain("a.b.example.com") == "example.com"


@pytest.mark.parametrize(("identifier", "from_domain", "mode", "expected"), [
    ("example.com", "example.com", "s", True),
    ("mail.example.com", "example.com", "s", False),
    ("mail.example.com", "example.com", "r", True),
    ("example.com", "news.example.com", "r", True),
    ("example.co.uk", "other.co.uk", "r", False),
    ("evil.example", "example.com", "r", False),
])
def test_alignment(identifier, from_domain, mode, expected):
    assert auth.aligned(identifier, from_domain, mode) is expected


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "", domain)


def test_dmarc_pass_through_aligned_spf_or_dkim(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    by_spf = auth.evaluate_dmarc("example.com", spf("pass", "bounces.example.com"), [],
                                 sample=0.0)
    assert by_spf.result == "pass"
    by_dkim = auth.evaluate_dmarc("example.com", spf("fail", "example.com"),
                                  [DkimResult("pass", "example.com", "s")], sample=0.0)
    assert by_dkim.result == "pass"


def test_dmarc_strict_alignment_refuses_a_subdomain(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; aspf=s; adkim=s")
    result = auth.evaluate_dmarc(
        "example.com", spf("pass", "bounces.example.com"),
        [DkimResult("pass", "mail.example.com", "s")], sample=0.0)
    assert (result.result, result.policy) == ("fail", "reject")


def test_dmarc_fail_when_only_an_unaligned_domain_passes(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine")
    result = auth.evaluate_dmarc("example.com", spf("pass", "evil.example"),
                                 [DkimResult("pass", "evil.example", "s")], sample=0.0)
    assert (result.result, result.policy, result.requested) == ("fail", "quarantine",
                                                                 "quarantine")


def test_dmarc_subdomain_policy_from_the_organizational_domain(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    result = auth.evaluate_dmarc("news.example.com", spf("fail", "news.example.com"), [],
                                 sample=0.0)
    assert (result.result, result.policy) == ("fail", "quarantine")
    # The organisational domain itself gets p=.
    result = auth.evaluate_dmarc("example.com", spf("fail", "example.com"), [], sample=0.0)
    assert result.policy == "reject"


def test_dmarc_own_record_of_a_subdomain_wins(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    zone.add("_dmarc.news.example.com", "TXT", "v=DMARC1; p=none")
    result = auth.evaluate_dmarc("news.example.com", spf("fail", "x.example"), [], sample=0.0)
    assert (result.result, result.policy) == ("fail", "none")


def test_dmarc_pct_samples_the_policy(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; pct=20")
    inside = auth.evaluate_dmarc("example.com", spf("fail", "example.com"), [], sample=0.1)
    outside = auth.evaluate_dmarc("example.com", spf("fail", "example.com"), [], sample=0.5)
    assert (inside.policy, outside.policy) == ("reject", "quarantine")


def test_dmarc_none_and_temperror(zone):
    assert auth.evaluate_dmarc("example.com", spf("none", "x"), [], sample=0).result == "none"
    zone.fail("_dmarc.example.com", "TXT")
    assert auth.evaluate_dmarc("example.com", spf("none", "x"), [],
                               sample=0).result == "temperror"


def test_dmarc_two_records_mean_none(zone):
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    assert auth.evaluate_dmarc("example.com", spf("fail", "x"), [], sample=0).result == "none"


# --- ARC ----------------------------------------------------------------------------


def test_arc_chain_sealed_by_a_forwarder(zone, dkim_signer):
    relay = dkim_signer("relay.example", "arc")
    forwarded = b"Authentication-Results: relay.example; spf=pass\r\n" + message()
    seal = dkim.arc_sign(forwarded, b"arc", b"relay.example", relay.private_pem,
                         b"relay.example")
    sealed = b"".join(seal) + forwarded
    assert auth.verify_arc(sealed) == "pass"
    assert auth.verify_arc(sealed.replace(b"noon", b"midnight")) == "fail"
    assert auth.verify_arc(message()) == "none"


def test_spf_mx_mechanism(zone):
    zone.add("sender.example", "TXT", "v=spf1 mx -all")
    zone.add("sender.example", "MX", "10 mx1.sender.example")
    zone.add("mx1.sender.example", "A", IP)
    assert auth.check_spf(IP, "alice@sender.example", "mx").result == "pass"
    assert auth.check_spf("192.0.2.11", "alice@sender.example", "mx").result == "fail"
