"""The phishing rules as pure functions: skeletons, links, attachments, and
each built sample tripping its rule (and the control tripping none)."""

import io
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.antispam import phishing
from apps.antispam.phishing import Attachment, Hosted, message_facts, rule_hits
from tests.antispam import phishing_samples as samples

HOSTED = Hosted(frozenset({"example.org", "microsoft.example"}))


def hits(data: bytes, *, hosted: Hosted = HOSTED, authenticated: bool = False,
         from_verified: bool = False, fresh: tuple[str, ...] = ()) -> list[str]:
    return rule_hits(message_facts(data), hosted, authenticated=authenticated,
                     from_verified=from_verified, fresh_domains=fresh)


@pytest.mark.parametrize("lookalike", [
    "examp1e.org", "exarnple.org", "ex\u0430mple.org", samples.HOMOGRAPH_ACE,
    "EXAMPLE.0RG", "mail.examp1e.org", "rnicrosoft.example",
])
def test_lookalikes_of_a_hosted_domain_are_found_by_skeleton(lookalike):
    assert phishing.lookalike_of(lookalike, HOSTED.domains) in HOSTED.domains


@pytest.mark.parametrize("other", [
    "example.org", "mail.example.org", "sample.org", "example.com", "example.org.evil.example",
    "", "exampl.org",
])
def test_other_domains_are_no_lookalikes(other):
    assert phishing.lookalike_of(other, HOSTED.domains) is None


def test_skeleton_follows_tr39():
    # TR39 confusables: Cyrillic а → a, digit one → l, "rn" ~ "m" (m → rn).
    assert phishing.skeleton("p\u0430ypa1") == phishing.skeleton("paypal")
    assert phishing.skeleton("modern") == phishing.skeleton("rnodern")
    assert phishing.skeleton("paypal") != phishing.skeleton("paypaI-x")


def test_each_sample_trips_its_rule():
    assert hits(samples.LOOKALIKE) == ["FROM_LOOKALIKE_DOMAIN"]
    assert hits(samples.DISPLAY_NAME) == ["FROM_NAME_IMITATES_DOMAIN"]
    assert hits(samples.LINK_MISMATCH) == ["LINK_TEXT_MISMATCH", "LINK_TO_IP"]
    assert hits(samples.ATTACHMENTS) == ["ATTACH_EXECUTABLE", "ATTACH_MACRO",
                                         "ATTACH_DOUBLE_EXTENSION"]
    assert hits(samples.ENCRYPTED) == ["ATTACH_EXECUTABLE", "ATTACH_ENCRYPTED_ARCHIVE"]
    assert hits(samples.REPLY_TO) == ["REPLY_TO_OUTSIDE"]
    assert hits(samples.HAM) == []
    assert hits(samples.HAM, fresh=("friend.example",)) == ["LINK_FRESH_DOMAIN"]


def test_a_name_shown_over_a_link_to_an_ip_address_is_a_mismatch():
    shown_name = samples.build(
        sender="Bank <notice@bank.example>", subject="Unusual sign-in", text="See the link.",
        html='<p><a href="http://198.51.100.7/verify">https://www.bank.example/review</a></p>')
    assert hits(shown_name) == ["LINK_TEXT_MISMATCH", "LINK_TO_IP"]
    shown_address = samples.build(
        sender="Lab <lab@lab.example>", subject="Results", text="See the link.",
        html='<p><a href="http://198.51.100.7/results">http://198.51.100.7/results</a></p>')
    assert hits(shown_address) == ["LINK_TO_IP"]


def test_identity_rules_spare_our_users_and_proven_senders():
    for data in (samples.LOOKALIKE, samples.DISPLAY_NAME, samples.REPLY_TO):
        assert hits(data, authenticated=True) == []
    # A lookalike proves nothing by signing for itself; our domain, proven, may
    # have its replies go anywhere.
    assert hits(samples.LOOKALIKE, from_verified=True) == ["FROM_LOOKALIKE_DOMAIN"]
    assert hits(samples.REPLY_TO, from_verified=True) == []
    with_user = Hosted(HOSTED.domains, name_is_users=True)
    assert hits(samples.HAM, hosted=with_user) == ["FROM_NAME_IMITATES_USER"]


def test_links_keep_their_visible_text():
    links = phishing.html_links(
        '<a href="https://A.Example/x">see <b>b.example</b></a><a href="mailto:x@y">m</a>'
        '<a href="http://[2001:db8::1]/">v6</a><a href="http://user@3232235777/">n</a>')
    assert links == [phishing.Link("a.example", "see b.example"),
                     phishing.Link("2001:db8::1", "v6"), phishing.Link("3232235777", "n")]
    assert all(phishing.is_ip_host(link.host) for link in links[1:])
    assert [phishing.is_ip_host(host) for host in (
        "a.example", "cafe.babe", "0x7f.1", "127.0.0.1", "017700000001", "fe80::1%eth0",
        "xn--80ak6aa92e.com")] == [False, False, True, True, True, True, False]
    # Text that is no host name is no mismatch; the same organisation is none either.
    assert hits(samples.build(html='<a href="https://t.example/c?1">Click here</a>'
                                   '<a href="https://www.shop.example/">shop.example</a>')) == []


def test_attachment_names_and_archives():
    def of(filename: str, data: bytes = b"", content_type: str = "application/pdf") -> set[str]:
        return phishing.attachment_hits(Attachment(filename, content_type, data))

    assert of("report.pdf") == set()
    assert of("photo.jpg.scr") == {"ATTACH_EXECUTABLE", "ATTACH_DOUBLE_EXTENSION"}
    assert of("budget.xlsm") == {"ATTACH_MACRO"}
    assert of("scan.pdf.zip", samples.zip_of({"scan.pdf": b"%PDF"})) == {
        "ATTACH_DOUBLE_EXTENSION"}
    assert of("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100)
              + "_VBA_PROJECT".encode("utf-16-le")) == {"ATTACH_MACRO"}
    assert of("a.zip", samples.encrypted_zip("a.txt", b"hi")) == {"ATTACH_ENCRYPTED_ARCHIVE"}
    assert of("a.zip", samples.zip_of({"a.txt": b"hi"})) == set()
    assert of("archive.tar.gz") == set()


def test_encrypted_flag_read_from_the_central_directory():
    data = samples.encrypted_zip("secret.txt", b"data")
    facts = phishing.zip_facts(data)
    assert facts == phishing.ArchiveFacts(True, ["secret.txt"])
    # Python's own reader agrees that the entry is encrypted.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.infolist()[0].flag_bits & 1
    assert phishing.zip_facts(b"PK\x03\x04 not a zip") is None


@given(st.binary(max_size=3000))
def test_message_facts_never_raise(data):
    facts = message_facts(data)
    rule_hits(facts, HOSTED, authenticated=False, from_verified=False)


@given(st.binary(max_size=600))
def test_zip_facts_never_raise(tail):
    for data in (b"PK" + tail, samples.zip_of({"a": b"b"})[:len(tail)] + tail):
        phishing.zip_facts(data)


@given(st.text(max_size=300))
def test_link_parser_never_raises(text):
    phishing.html_links(text)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30),
                          st.floats(min_value=0, max_value=1)), max_size=8))
def test_clues_survive_their_header_field(clues):
    from apps.antispam.services import format_clues, parse_clues

    value = format_clues(clues)
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert parse_clues(value) == [(token, round(f, 2)) for token, f in clues]
