"""The writing side in a real browser against the real web server, checked
from the other end with real clients: IMAP for what landed, dkimpy for the
signature."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import re

import dkim
import pytest
from playwright.sync_api import Page, expect

from apps.directory.models import DkimKey
from apps.store import services as store
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_mailbox

pytestmark = pytest.mark.slow


def dkim_dns(name: bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's dnsfunc answering from the DkimKey rows (what `dnsrecords` publishes)."""
    selector, _, domain = name.decode().rstrip(".").partition("._domainkey.")
    key = DkimKey.objects.filter(selector=selector, domain__name=domain, active=True).first()
    if key is None:
        return None
    kind = "ed25519" if key.algorithm.startswith("ed25519") else "rsa"
    return f"v=DKIM1; k={kind}; p={key.public_key}".encode()


class Imap:
    """A mailbox seen through IMAP, as any mail program sees it."""

    def __init__(self, port: int, address: str) -> None:
        self.client = imaplib.IMAP4("127.0.0.1", port)
        self.client.login(address, PASSWORD)

    def messages(self, folder: str) -> list[tuple[bytes, bytes]]:
        """(FLAGS, RFC822) of each message in the folder."""
        _, (exists,) = self.client.select(folder, readonly=True)
        if exists == b"0":
            return []
        _, data = self.client.fetch("1:*", "(FLAGS RFC822)")
        found = []
        for item in data:
            if isinstance(item, tuple):
                found.append((re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1), item[1]))
        return found

    def close(self) -> None:
        self.client.logout()


@pytest.fixture
def people(transactional_db):
    return make_mailbox("alice@example.org"), make_mailbox("bob@example.org")


@pytest.fixture
def imap(mail_servers):
    opened: list[Imap] = []

    def open_as(address: str) -> Imap:
        opened.append(Imap(mail_servers.port("imap"), address))
        return opened[-1]

    yield open_as
    for session in opened:
        session.close()


def test_compose_and_send_with_an_attachment(web_server, page: Page, people, imap, tmp_path):
    payload = os.urandom(50_000)
    upload = tmp_path / "report.bin"
    upload.write_bytes(payload)
    sign_in(page, web_server.url, "alice@example.org", PASSWORD)
    page.goto(f"{web_server.url}/mail/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.org")
    page.get_by_label("Subject").fill("Quarterly report")
    page.get_by_label("Message", exact=True).fill("Here it is.")
    page.get_by_label("Attach files").set_input_files(str(upload))
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()

    ((_, received),) = imap("bob@example.org").messages("INBOX")
    assert dkim.verify(received, dnsfunc=dkim_dns)
    message = email.message_from_bytes(received, policy=email.policy.default)
    assert message["Subject"] == "Quarterly report"
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "report.bin"
    assert attachment.get_payload(decode=True) == payload, "byte for byte"
    ((flags, copy),) = imap("alice@example.org").messages("Sent")
    assert b"\\Seen" in flags and copy.endswith(received.partition(b"DKIM-Signature")[2])
    assert imap("alice@example.org").messages("Drafts") == []


def test_reply_keeps_the_thread_headers(web_server, page: Page, people, imap):
    alice, _ = people
    (original,) = store.deliver([alice], (
        b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: Dinner\r\n"
        b"Message-ID: <dinner-2@example.org>\r\nReferences: <dinner-1@example.org>\r\n"
        b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nFriday at eight?\r\n"))
    sign_in(page, web_server.url, "alice@example.org", PASSWORD)
    page.goto(f"{web_server.url}/mail/compose/?reply={original.pk}")
    expect(page.get_by_label("Subject")).to_have_value("Re: Dinner")
    expect(page.get_by_label("To", exact=True)).to_have_value("Bob <bob@example.org>")
    body = page.get_by_label("Message", exact=True)
    expect(body).to_have_value(re.compile("> Friday at eight\\?"))
    body.press("Control+Home")
    body.type("Yes, see you then.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()
    ((_, received),) = imap("bob@example.org").messages("INBOX")
    message = email.message_from_bytes(received, policy=email.policy.default)
    assert message["In-Reply-To"] == "<dinner-2@example.org>"
    assert message["References"] == "<dinner-1@example.org> <dinner-2@example.org>"
    assert message.get_content().startswith("Yes, see you then.")


def test_draft_is_saved_by_itself_and_seen_over_imap(web_server, page: Page, people, imap):
    sign_in(page, web_server.url, "alice@example.org", PASSWORD)
    page.goto(f"{web_server.url}/mail/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.org")
    page.get_by_label("Subject").fill("Half written")
    expect(page.get_by_role("status")).to_contain_text("Draft saved", timeout=10_000)
    ((flags, draft),) = imap("alice@example.org").messages("Drafts")
    assert b"\\Draft" in flags and b"Subject: Half written" in draft
    page.get_by_label("Subject").fill("Nearly written")
    expect(page.get_by_role("status")).to_contain_text("not saved yet")
    expect(page.get_by_role("status")).to_contain_text("Draft saved", timeout=10_000)
    ((_, draft),) = imap("alice@example.org").messages("Drafts")  # one version only
    assert b"Subject: Nearly written" in draft


def test_a_refused_recipient_shows_an_error_and_the_draft_stays(
        web_server, page: Page, people, imap):
    sign_in(page, web_server.url, "alice@example.org", PASSWORD)
    page.goto(f"{web_server.url}/mail/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.org, nobody@example.org")
    page.get_by_label("Subject").fill("Invitation")
    page.get_by_label("Message", exact=True).fill("Come on Friday.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Not sent: No such user here: <nobody@example.org>")).to_be_visible()
    expect(page.get_by_label("Subject")).to_have_value("Invitation")
    ((_, draft),) = imap("alice@example.org").messages("Drafts")
    assert b"Subject: Invitation" in draft
    assert imap("bob@example.org").messages("INBOX") == []


def test_rich_text_is_sent_with_a_text_part(web_server, page: Page, people, imap):
    sign_in(page, web_server.url, "alice@example.org", PASSWORD)
    page.goto(f"{web_server.url}/mail/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.org")
    page.get_by_label("Subject").fill("Formatted")
    page.get_by_label("Rich text", exact=True).check()
    area = page.get_by_role("textbox", name="Message (rich text)")
    area.click()
    area.press("Control+a")
    area.type("Plain then ")
    page.get_by_role("button", name="Bold").click()
    area.type("strong")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()
    ((_, received),) = imap("bob@example.org").messages("INBOX")
    message = email.message_from_bytes(received, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert re.search(r"<b>strong</b>", message.get_body(("html",)).get_content())
    assert "Plain then strong" in message.get_body(("plain",)).get_content()
