"""Security keys (WebAuthn) in real Chromium, with a virtual authenticator
from the DevTools protocol standing in for the key: a mailbox user adds one
in the webmail and an administrator in the panel, each signs out and back in
with password and key, and removes it. WebAuthn wants a secure context and a
relying party ID that is a host name: the browser goes to http://localhost,
which is both (the server listens on 127.0.0.1)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from apps.directory.models import AuditEntry, SecurityKey, User
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.web_server import WebServerProcess
from tests.webadmin.directory.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow


def plug_in_a_key(context: BrowserContext, page: Page) -> tuple[object, str]:
    """A virtual USB security key (CTAP2) for ``page``; the CDP session and
    the authenticator's ID."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True}})
    return cdp, added["authenticatorId"]


def local(web_server: WebServerProcess) -> str:
    return web_server.url.replace("127.0.0.1", "localhost")


def add_key(page: Page, name: str) -> None:
    page.get_by_label("Key name").fill(name)
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("status")).to_contain_text(f"Security key “{name}” added.")
    expect(page.locator(".security-key-list")).to_contain_text(name)


def sign_in_with_key(page: Page, base_url: str, email: str, password: str) -> None:
    sign_in(page, base_url, email, password)
    expect(page).to_have_url(re.compile(r"/signin/code/$"))
    page.get_by_role("button", name="Use your security key").click()


def test_a_mailbox_user_signs_in_with_a_security_key(
        web_server: WebServerProcess, context: BrowserContext, page: Page) -> None:
    make_mailbox("kay@keys.example")
    base = local(web_server)
    cdp, authenticator = plug_in_a_key(context, page)
    sign_in(page, base, "kay@keys.example", PASSWORD)
    page.goto(f"{base}/mail/settings/")
    page.locator("#password").get_by_role("link", name="Two-factor sign-in").click()
    expect(page.locator(".security-key-list")).to_have_count(0)
    add_key(page, "Blue key")
    expect(page.locator(".security-key-list")).to_contain_text("last used never")
    key = SecurityKey.objects.get(user__email="kay@keys.example")
    assert key.name == "Blue key" and key.transports == ["usb"]
    # Password, then the key.
    page.get_by_role("button", name="Sign out").click()
    sign_in_with_key(page, base, "kay@keys.example", PASSWORD)
    expect(page.get_by_role("link", name="Compose")).to_be_visible()
    key.refresh_from_db()
    assert key.last_used is not None and key.sign_count >= 1

    # Another key, not registered: the page says so and does not sign in.
    page.get_by_role("button", name="Sign out").click()
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    [credential] = stored["credentials"]  # type: ignore[index]
    assert credential["rpId"] == "localhost" and credential["signCount"] == key.sign_count
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator})
    _, authenticator = plug_in_a_key(context, page)
    sign_in_with_key(page, base, "kay@keys.example", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("No security key answered")
    page.goto(f"{base}/mail/")
    expect(page).to_have_url(re.compile(r"/signin/"))

    # The registered key again (its credential on the plugged-in virtual key).
    cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator,
                                        "credential": credential})
    sign_in_with_key(page, base, "kay@keys.example", PASSWORD)
    expect(page.get_by_role("link", name="Compose")).to_be_visible()

    # Removed: the password alone signs in again.
    page.goto(f"{base}/mail/settings/two-step/")
    page.get_by_role("button", name="Remove Blue key").click()
    expect(page.get_by_role("status")).to_contain_text("Security key “Blue key” removed.")
    expect(page.locator(".security-key-list")).to_have_count(0)
    assert AuditEntry.objects.filter(action="security key remove", object_type="account",
                                     object_repr="kay@keys.example: Blue key").exists()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "kay@keys.example", PASSWORD)
    expect(page.get_by_role("link", name="Compose")).to_be_visible()


def test_an_administrator_signs_in_to_the_panel_with_a_security_key(
        web_server: WebServerProcess, context: BrowserContext, page: Page) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    base = local(web_server)
    plug_in_a_key(context, page)
    sign_in(page, base, "root@admin.example", ADMIN_PASSWORD)
    page.get_by_role("link", name="Two-factor sign-in").click()
    add_key(page, "Desk key")
    # The same key under another name: the browser refuses (excludeCredentials).
    page.get_by_label("Key name").fill("Spare key")
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("alert")).to_contain_text("That key is registered already.")
    assert SecurityKey.objects.filter(user__email="root@admin.example").count() == 1

    page.get_by_role("button", name="Sign out").click()
    sign_in_with_key(page, base, "root@admin.example", ADMIN_PASSWORD)
    expect(page).to_have_url(re.compile(r"/manage/$"))
    page.get_by_role("link", name="Two-factor sign-in").click()
    expect(page.locator(".security-key-list")).not_to_contain_text("last used never")
    page.get_by_role("button", name="Remove Desk key").click()
    expect(page.get_by_role("status")).to_contain_text("Security key “Desk key” removed.")
    assert AuditEntry.objects.filter(action="security key remove", object_type="administrator",
                                     object_repr="root@admin.example: Desk key").exists()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "root@admin.example", ADMIN_PASSWORD)
    expect(page).to_have_url(re.compile(r"/manage/$"))
