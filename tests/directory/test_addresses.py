import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.directory.addresses import (
    normalize_address,
    normalize_domain,
    split_address,
    strip_subaddress,
)
from mailhost.errors import Invalid


def test_domain_is_lowercased_idna():
    assert normalize_domain("Bücher.Example.") == "xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["", "localhost", "-a.example", "a..example", "a_b.example",
                                 "x" * 64 + ".example"])
def test_bad_domains_are_refused(bad):
    with pytest.raises(Invalid):
        normalize_domain(bad)


def test_local_part_is_case_insensitive_and_may_be_utf8():
    assert normalize_address("Jöran.Smith@Example.ORG") == "jöran.smith@example.org"


@pytest.mark.parametrize("bad", ["no-at-sign", "@example.org", "a b@example.org",
                                 '"quoted"@example.org', "a..b@example.org", "x" * 65 + "@e.org"])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(Invalid):
        split_address(bad)


def test_subaddress():
    assert strip_subaddress("user+tag", "+") == "user"
    assert strip_subaddress("user", "+") is None
    assert strip_subaddress("+tag", "+") is None
    assert strip_subaddress("user+tag", "") is None


@given(st.text(max_size=300))
def test_split_address_never_crashes(text):
    try:
        local, domain = split_address(text)
    except Invalid:
        return
    assert local == local.lower() and domain == domain.lower() and "@" not in domain
