"""The webmail's settings page shows the mailbox's Sieve filters and where to
manage them."""

from __future__ import annotations

import pytest

from apps.sieve import services
from tests.factories import make_mailbox
from tests.webmail.writing_helpers import signed_in


@pytest.fixture
def alice(db):
    return make_mailbox("alice@example.org")


def test_settings_list_the_filters_and_the_active_one(client, alice, settings):
    settings.MAILHOST_PUBLIC_HOSTNAME = "mail.example.org"
    page = signed_in(client, alice).get("/mail/settings/").content.decode()
    # The public name and port (a proxy may stand before the listener's own port).
    assert "No filters." in page and "mail.example.org, port 4190" in page
    services.put_script(alice, "holiday", "keep;")
    services.put_script(alice, "sorting", "keep;")
    services.set_active(alice, "sorting")
    page = client.get("/mail/settings/").content.decode()
    assert "<li>holiday</li>" in page and "<li>sorting <strong>(active)</strong></li>" in page
