"""What the filter's verdicts show in the webmail, in Chromium: the warning
banner on mail that claims one of our domains and came from outside
unproven, and on a Junk message why it was junked, with "Not junk" moving
it back and teaching the user's model. Mail arrives over real SMTP."""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from apps.antispam import learning
from apps.store.models import Message
from tests.antispam.phishing_samples import build
from tests.antispam.test_learning import train_global
from tests.conftest import database_url, sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.web_server import WebServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def eager_web_server(transactional_db, settings) -> Iterator[WebServerProcess]:
    """The web server with Celery tasks run in the request (no worker here):
    the training that a move out of Junk queues happens before the answer."""
    server = WebServerProcess(database_url(), settings.MAILHOST_STORAGE_ROOT,
                              env={"MAILHOST_CELERY_EAGER": "1"})
    yield server
    server.stop()


def send(port: int, data: bytes, mail_from: str = "bounce@sender.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.sender.example")
        client.sendmail(mail_from, ["bob@example.org"], data)


def message_pk(subject: str) -> int:
    return Message.objects.get(folder__mailbox__address="bob@example.org",
                               blob__subject=subject).pk


def test_mail_claiming_our_domain_from_outside_shows_a_warning(web_server, mail_servers,
                                                                page: Page) -> None:
    make_mailbox("bob@example.org")
    smtp = mail_servers.port("smtp")
    send(smtp, build(sender="Payroll <payroll@example.org>", subject="New bank details",
                     text="Reply with your bank details."), mail_from="payroll@example.org")
    send(smtp, build(sender="Ann <ann@friend.example>", subject="Lunch", text="At noon?"))
    sign_in(page, web_server.url, "bob@example.org", PASSWORD)

    page.goto(f"{web_server.url}/mail/message/{message_pk('New bank details')}/")
    banner = page.get_by_role("alert")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Be careful with this message.")
    expect(banner).to_contain_text("claims to come from example.org")
    expect(banner).to_contain_text("neither SPF nor DKIM proves")
    expect(page.locator(".mail-text")).to_contain_text("Reply with your bank details.")

    page.goto(f"{web_server.url}/mail/message/{message_pk('Lunch')}/")
    expect(page.locator(".mail-text")).to_contain_text("At noon?")
    expect(page.locator(".sender-warning")).to_have_count(0)


def test_a_junk_message_says_why_and_not_junk_teaches(eager_web_server, mail_servers,
                                                      page: Page) -> None:
    bob = make_mailbox("bob@example.org")
    train_global()  # "cheap pills online" is spam to the site's model
    send(mail_servers.port("smtp"), build(
        sender="Pharmacy <deals@pharmacy.example>", subject="Offer",
        text="cheap pills online",
        attachments=(("order.pdf.exe", "application/octet-stream", b"MZ" + bytes(30)),)))
    sign_in(page, eager_web_server.url, "bob@example.org", PASSWORD)
    page.locator(".folder-list a", has_text="Junk").click()
    page.locator(".msg-row", has_text="Offer").get_by_role("link").click()

    reasons = page.get_by_role("region", name="Why this is in Junk")
    expect(reasons).to_be_visible()
    expect(reasons).to_contain_text(re.compile(r"Spam score \d+\.\d; mail from 9\.0 goes to Junk"))
    expect(reasons).to_contain_text("ATTACH_EXECUTABLE: It carries a program or script")
    expect(reasons).to_contain_text("ATTACH_DOUBLE_EXTENSION")
    expect(reasons).to_contain_text("The classifier rates it")
    expect(reasons.locator("code.clue", has_text=re.compile(r"^pills$"))).to_be_visible()

    page.locator("#reading-form").get_by_role("button", name="Not junk").click()
    expect(page.get_by_text(re.compile(r"Moved 1 message to (Inbox|INBOX)\."))).to_be_visible()
    assert Message.objects.get(folder__mailbox=bob, blob__subject="Offer").folder.name == "INBOX"
    model = learning.user_model(bob.pk)
    deadline = time.monotonic() + 10
    while (model.spam_count, model.ham_count) != (0, 1) and time.monotonic() < deadline:
        time.sleep(0.2)
        model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (0, 1)  # learnt as ham, for him
    # In the Inbox the message no longer explains a Junk verdict.
    page.goto(f"{eager_web_server.url}/mail/message/{message_pk('Offer')}/")
    expect(page.locator(".mail-text")).to_contain_text("cheap pills online")
    expect(page.get_by_role("region", name="Why this is in Junk")).to_have_count(0)
