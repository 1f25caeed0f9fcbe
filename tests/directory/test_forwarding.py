"""A mailbox's own forwarding (set by its user), through resolve()."""

import pytest

from apps.directory import services
from mailhost.errors import Invalid
from tests.factories import make_mailbox


@pytest.fixture
def alice(db):
    return make_mailbox("alice@example.org")


@pytest.fixture
def bob(alice):
    return make_mailbox("bob@example.org")


def test_forward_with_a_copy_kept(alice, bob):
    services.update_mailbox(alice, forward_to=["Bob@Example.org", "me@elsewhere.example"])
    resolution = services.resolve("alice@example.org")
    assert [m.address for m in resolution.mailboxes] == ["bob@example.org", "alice@example.org"]
    assert resolution.external == ["me@elsewhere.example"]


def test_forward_without_a_copy(alice, bob):
    services.update_mailbox(alice, forward_to=["bob@example.org"], forward_keep_copy=False)
    assert [m.address for m in services.resolve("alice+tag@example.org").mailboxes] == [
        "bob@example.org"]
    services.update_mailbox(alice, forward_to=[])
    assert [m.address for m in services.resolve("alice@example.org").mailboxes] == [
        "alice@example.org"]


def test_forwarding_loops_deliver_once(alice, bob):
    services.update_mailbox(alice, forward_to=["bob@example.org"])
    services.update_mailbox(bob, forward_to=["alice@example.org"])
    assert sorted(m.address for m in services.resolve("alice@example.org").mailboxes) == [
        "alice@example.org", "bob@example.org"]


def test_bad_forwarding_is_refused_with_its_field(alice):
    for targets in (["not an address"], ["alice@example.org"], ["ALICE@example.org"],
                    [f"x{n}@elsewhere.example" for n in range(51)]):
        with pytest.raises(Invalid) as error:
            services.update_mailbox(alice, forward_to=targets)
        assert error.value.context["field"] == "forward_to"
    alice.refresh_from_db()
    assert alice.forward_to == []
