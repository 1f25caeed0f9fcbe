"""The webmail settings page in a real browser: the mail-program settings
shown to a signed-in user, and the Apple profile downloaded from its link."""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from apps.webmail.templatetags.webmail import host_name_breaks
from tests.conftest import database_url, sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.web_server import WebServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def public_web_server(transactional_db, settings) -> Iterator[WebServerProcess]:
    """The web server told its public name (the listeners' ports stay the
    developer ones: clients are told the standard ports)."""
    server = WebServerProcess(database_url(), Path(settings.MAILHOST_STORAGE_ROOT),
                              env={"MAILHOST_PUBLIC_HOSTNAME": "mail.ours.example"})
    yield server
    server.stop()


def test_settings_page_offers_the_apple_profile(public_web_server, page: Page):
    make_mailbox("alice@ours.example")
    sign_in(page, public_web_server.url, "alice@ours.example", PASSWORD)
    page.goto(f"{public_web_server.url}/mail/settings/")
    section = page.locator("#devices")
    expect(section.get_by_role("row", name="IMAP mail.ours.example 993 SSL/TLS")).to_be_visible()
    expect(section.get_by_role("row", name="SMTP mail.ours.example 587 STARTTLS")).to_be_visible()
    with page.expect_download() as download_info:
        section.get_by_role("link", name="Download the Apple configuration profile").click()
    download = download_info.value
    assert download.suggested_filename == "ours.example.mobileconfig"
    profile = plistlib.loads(Path(download.path()).read_bytes())
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert (mail["EmailAddress"], mail["IncomingMailServerHostName"],
            mail["IncomingMailServerPortNumber"], mail["OutgoingMailServerPortNumber"]) == (
        "alice@ours.example", "mail.ours.example", 993, 465)


def test_host_names_wrap_only_after_their_dots():
    """The page's server table on a phone: "mail." / "ours.example", never a
    name cut inside a label; and the name is still escaped."""
    assert host_name_breaks("mail.ours.example") == "mail.<wbr>ours.<wbr>example"
    assert host_name_breaks("a<b>.x") == "a&lt;b&gt;.<wbr>x"
