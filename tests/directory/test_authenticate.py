import asyncio

import pytest
from django.test import override_settings

from apps.directory import services
from apps.directory.models import Mailbox
from tests.factories import PASSWORD, make_mailbox

pytestmark = pytest.mark.django_db


def test_good_and_bad_password():
    mailbox = make_mailbox("alice@example.org")
    assert services.authenticate("Alice@Example.org", PASSWORD, remote_ip="192.0.2.1") == mailbox
    assert services.authenticate("alice@example.org", "wrong", remote_ip="192.0.2.1") is None
    assert services.authenticate("nobody@example.org", PASSWORD, remote_ip="192.0.2.1") is None


def test_password_change_takes_effect_at_once_despite_the_cache():
    mailbox = make_mailbox("alice@example.org")
    assert services.authenticate("alice@example.org", PASSWORD)
    services.set_password(mailbox.user, "a new long password")
    assert services.authenticate("alice@example.org", PASSWORD) is None
    assert services.authenticate("alice@example.org", "a new long password") == mailbox


def test_disabled_mailbox_cannot_log_in():
    mailbox = make_mailbox("alice@example.org")
    Mailbox.objects.filter(pk=mailbox.pk).update(active=False)
    assert services.authenticate("alice@example.org", PASSWORD) is None


@override_settings(MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN=3, MAILHOST_AUTH_MAX_FAILURES_PER_IP=100)
def test_lockout_per_login_blocks_even_the_right_password():
    make_mailbox("alice@example.org")
    for _ in range(3):
        assert services.authenticate("alice@example.org", "wrong", remote_ip="192.0.2.1") is None
    assert services.authenticate("alice@example.org", PASSWORD, remote_ip="192.0.2.9") is None


@override_settings(MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN=100, MAILHOST_AUTH_MAX_FAILURES_PER_IP=3)
def test_lockout_per_ip_spans_logins():
    make_mailbox("alice@example.org")
    for n in range(3):
        services.authenticate(f"guess{n}@example.org", "wrong", remote_ip="192.0.2.7")
    assert services.authenticate("alice@example.org", PASSWORD, remote_ip="192.0.2.7") is None
    assert services.authenticate("alice@example.org", PASSWORD, remote_ip="192.0.2.8")


@pytest.mark.django_db(transaction=True)
def test_async_authenticate_runs_off_the_loop():
    mailbox = make_mailbox("alice@example.org")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(*[
            services.aauthenticate("alice@example.org", PASSWORD, protocol="test")
            for _ in range(8)])
        task.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert all(r == mailbox for r in results)
    assert ticks > 0  # the loop kept running while passwords were checked
