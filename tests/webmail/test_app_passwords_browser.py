"""App passwords in the webmail, in a real browser: made and shown once, used
by a real IMAP client, revoked with a confirmation; and the choice that mail
programs must use them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ServerThread, sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.logins import imap_login
from tests.web_server import WebServerProcess

pytestmark = pytest.mark.slow


def test_an_app_password_is_made_shown_once_used_and_revoked(
        web_server: WebServerProcess, mail_servers: ServerThread, page: Page) -> None:
    make_mailbox("alice@ours.example")
    sign_in(page, web_server.url, "alice@ours.example", PASSWORD)
    page.goto(f"{web_server.url}/mail/settings/")
    page.locator("#password").get_by_role("link", name="app passwords").click()
    expect(page.get_by_role("heading", name="App passwords", level=1)).to_be_visible()
    expect(page.locator("#list")).to_contain_text("None yet")

    page.get_by_label("Name").fill("Phone")
    page.get_by_role("button", name="Create app password").click()
    secret = page.locator("#new-secret").inner_text().strip()
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){4}", secret)
    expect(page.get_by_role("row", name=re.compile(r"^Phone .* never"))).to_be_visible()
    # Shown once: a reload no longer has it.
    page.reload()
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret not in page.content()

    assert imap_login(mail_servers, "alice@ours.example", secret)
    page.reload()
    expect(page.get_by_role("row", name=re.compile(r"^Phone .* IMAP from 127\.0\.0\.1"))
           ).to_be_visible()

    # Mail programs must use app passwords: the own password stops there.
    page.get_by_label(re.compile("Mail programs must use app passwords")).check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    assert not imap_login(mail_servers, "alice@ours.example", PASSWORD)
    assert imap_login(mail_servers, "alice@ours.example", secret)

    # Revoking asks first; cancelled, nothing happens.
    answers, questions = ["dismiss", "accept"], []

    def answer(dialog) -> None:  # type: ignore[no-untyped-def]
        questions.append(dialog.message)
        dialog.accept() if answers.pop(0) == "accept" else dialog.dismiss()

    page.on("dialog", answer)
    page.get_by_role("button", name="Revoke Phone").click()
    expect(page.get_by_role("row", name=re.compile(r"^Phone "))).to_be_visible()
    assert imap_login(mail_servers, "alice@ours.example", secret)
    page.get_by_role("button", name="Revoke Phone").click()
    expect(page.get_by_text("“Phone” revoked")).to_be_visible()
    assert questions and all("Revoke “Phone”?" in question for question in questions)
    assert not imap_login(mail_servers, "alice@ours.example", secret)
    # The webmail still takes the own password.
    page.context.clear_cookies()
    sign_in(page, web_server.url, "alice@ours.example", PASSWORD)
    expect(page.get_by_role("link", name="Compose")).to_be_visible()
