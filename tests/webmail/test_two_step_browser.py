"""Two-factor sign-in for mailbox users, in a real browser: set up in the
webmail with a code from an authenticator (pyotp standing in for the phone),
asked for at the next sign-in, and required by a domain's policy before any
mail is shown. With it on, IMAP takes app passwords only."""

from __future__ import annotations

import re

import pyotp
import pytest
from playwright.sync_api import Page, expect

from apps.directory import app_passwords
from apps.directory import services as directory
from apps.directory.models import AuditEntry
from tests.conftest import ServerThread, sign_in
from tests.factories import PASSWORD, make_domain, make_mailbox
from tests.logins import imap_login
from tests.web_server import WebServerProcess

pytestmark = pytest.mark.slow


def set_up_second_factor(page: Page) -> list[str]:
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    phone = pyotp.TOTP(page.locator("#totp-key").inner_text().strip())
    page.get_by_label("Code").fill(phone.now())
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Two-factor sign-in is on")).to_be_visible()
    codes = page.locator(".recovery-codes li").all_inner_texts()
    return codes


def test_a_user_turns_on_two_factor_sign_in(web_server: WebServerProcess,
                                            mail_servers: ServerThread, page: Page) -> None:
    mailbox = make_mailbox("alice@ours.example")
    _, app_secret = app_passwords.create(mailbox, "Phone")
    assert imap_login(mail_servers, "alice@ours.example", PASSWORD)
    sign_in(page, web_server.url, "alice@ours.example", PASSWORD)
    page.goto(f"{web_server.url}/mail/settings/")
    page.locator("#password").get_by_role("link", name="Two-factor sign-in").click()
    codes = set_up_second_factor(page)
    assert len(codes) == 10
    assert AuditEntry.objects.filter(action="2fa enrol", object_type="account",
                                     object_repr="alice@ours.example").exists()
    # Mail programs cannot ask for the code: the password alone no longer does.
    assert not imap_login(mail_servers, "alice@ours.example", PASSWORD)
    assert imap_login(mail_servers, "alice@ours.example", app_secret)

    # The next sign-in asks for a code; a recovery code does once.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, web_server.url, "alice@ours.example", PASSWORD)
    expect(page).to_have_url(re.compile(r"/signin/code/$"))
    page.get_by_label("Code").fill("000000")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_text(re.compile("not right", re.I))).to_be_visible()
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("link", name="Compose")).to_be_visible()


def test_a_domain_policy_makes_users_set_it_up_before_reading_mail(
        web_server: WebServerProcess, page: Page) -> None:
    domain = make_domain("strict.example")
    make_mailbox("dave@strict.example")
    directory.update_domain(domain, second_factor_required=True)
    sign_in(page, web_server.url, "dave@strict.example", PASSWORD)
    expect(page).to_have_url(re.compile(r"/mail/settings/two-step/$"))
    expect(page.get_by_role("alert")).to_contain_text("Your domain requires two-factor sign-in")
    expect(page.get_by_role("link", name="Inbox")).to_have_count(0)  # no folders shown
    page.goto(f"{web_server.url}/mail/compose/")
    expect(page).to_have_url(re.compile(r"/mail/settings/two-step/$"))
    set_up_second_factor(page)
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_text("Your domain requires it: it cannot be turned off.")).to_be_visible()
    page.goto(f"{web_server.url}/mail/")
    expect(page.get_by_role("link", name="Compose")).to_be_visible()

