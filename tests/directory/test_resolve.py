import pytest

from apps.directory import services
from apps.directory.models import Mailbox
from mailhost.errors import Conflict, Disabled, Invalid, LimitExceeded, NotFound
from tests.factories import make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def addresses(resolution):
    return sorted(m.address for m in resolution.mailboxes), sorted(resolution.external)


def test_mailbox_resolves_case_insensitively():
    mailbox = make_mailbox("alice@example.org")
    result = services.resolve("ALICE@Example.Org")
    assert result.hosted and result.mailboxes == [mailbox]


def test_subaddress_delivers_to_base_mailbox():
    make_mailbox("alice@example.org")
    assert addresses(services.resolve("alice+lists@example.org")) == (["alice@example.org"], [])


def test_foreign_domain_is_not_hosted():
    result = services.resolve("bob@elsewhere.test")
    assert not result.hosted and result.external == ["bob@elsewhere.test"]


def test_unknown_user_is_not_found():
    make_domain("example.org")
    with pytest.raises(NotFound):
        services.resolve("nobody@example.org")


def test_alias_to_local_and_external():
    make_mailbox("alice@example.org")
    make_mailbox("bob@example.org")
    services.create_alias("team@example.org",
                          ["alice@example.org", "Bob@example.org", "carol@elsewhere.test"])
    assert addresses(services.resolve("team@example.org")) == (
        ["alice@example.org", "bob@example.org"], ["carol@elsewhere.test"])


def test_alias_with_subaddress_and_nested_alias():
    make_mailbox("alice@example.org")
    services.create_alias("inner@example.org", ["alice@example.org"])
    services.create_alias("outer@example.org", ["inner@example.org"])
    assert addresses(services.resolve("outer+x@example.org")) == (["alice@example.org"], [])


def test_catch_all_takes_unknown_addresses_only():
    make_mailbox("alice@example.org")
    make_mailbox("postmaster@example.org")
    services.create_alias("@example.org", ["postmaster@example.org"])
    assert addresses(services.resolve("random@example.org")) == (["postmaster@example.org"], [])
    assert addresses(services.resolve("alice@example.org")) == (["alice@example.org"], [])


def test_alias_loop_is_cut_and_other_branches_still_deliver():
    make_mailbox("alice@example.org")
    services.create_alias("a@example.org", ["b@example.org"])
    services.create_alias("b@example.org", ["a@example.org", "alice@example.org"])
    assert addresses(services.resolve("a@example.org")) == (["alice@example.org"], [])


def test_pure_alias_loop_resolves_to_nothing():
    make_domain("example.org")
    services.create_alias("a@example.org", ["b@example.org"])
    services.create_alias("b@example.org", ["a@example.org"])
    with pytest.raises(NotFound):
        services.resolve("a@example.org")


def test_a_mailbox_reached_twice_is_delivered_once():
    make_mailbox("alice@example.org")
    services.create_alias("x@example.org", ["alice@example.org", "alice+copy@example.org"])
    assert addresses(services.resolve("x@example.org")) == (["alice@example.org"], [])


def test_disabled_mailbox_and_domain():
    mailbox = make_mailbox("alice@example.org")
    Mailbox.objects.filter(pk=mailbox.pk).update(active=False)
    with pytest.raises(Disabled):
        services.resolve("alice@example.org")
    make_mailbox("bob@other.example").domain.__class__.objects.filter(
        name="other.example").update(active=False)
    with pytest.raises(Disabled):
        services.resolve("bob@other.example")


def test_provisioning_validation():
    domain = make_domain("example.org", max_mailboxes=1)
    make_mailbox("alice@example.org")
    with pytest.raises(LimitExceeded):
        make_mailbox("bob@example.org")
    domain.max_mailboxes = 0
    domain.save()
    with pytest.raises(Conflict):
        services.create_alias("alice@example.org", ["bob@example.org"])
    with pytest.raises(Invalid):
        services.create_mailbox("carol@unhosted.example", "correct horse battery")
    with pytest.raises(Invalid):
        services.create_mailbox("carol@example.org", "short")
    with pytest.raises(Conflict):
        services.create_domain("EXAMPLE.org")
