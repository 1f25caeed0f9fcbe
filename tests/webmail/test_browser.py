"""The webmail in a real browser (Chromium) against the real web server
process, with mail arriving over real SMTP and watched over real IMAP."""

from __future__ import annotations

import imaplib
import smtplib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from apps.store import services as store
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.webmail.conftest import build

pytestmark = pytest.mark.slow

PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000"
                      "010001000002024401003b")


class RemoteHost:
    """A tiny HTTP server on 127.0.0.1 standing for a sender's web server:
    it records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                self.wfile.write(PIXEL)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote_host() -> Iterator[RemoteHost]:
    host = RemoteHost()
    yield host
    host.close()


def test_new_mail_over_smtp_appears_without_reload_and_reads(web_server, mail_servers,
                                                            page: Page) -> None:
    mailbox = make_mailbox("bob@here.example")
    store.deliver([mailbox], build(subject="Already here"))
    sign_in(page, web_server.url, mailbox.address, PASSWORD)
    expect(page).to_have_url(f"{web_server.url}/mail/")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(page.locator(".msg-row")).to_have_count(1)
    page.evaluate("window.notReloaded = true")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp"), timeout=20) as smtp:
        smtp.sendmail("ann@far.example", ["bob@here.example"],
                      build(subject="Fresh from SMTP",
                            body="Lunch at noon? https://example.org/menu"))
    row = page.locator(".msg-row", has_text="Fresh from SMTP")
    # The page hears of new mail within seconds; a loaded CI machine may take longer
    # to check and file it, hence the wide margin.
    expect(row).to_be_visible(timeout=30_000)
    assert page.evaluate("window.notReloaded") is True  # the same page, not a reload
    expect(page.locator(".folder-list a[aria-current=page] .count")).to_have_text("2")
    row.get_by_role("link").click()
    expect(page.locator(".mail-text")).to_contain_text("Lunch at noon?")
    expect(page.locator(".mail-text").get_by_role(
        "link", name="https://example.org/menu")).to_be_visible()


def test_hostile_html_runs_no_script_and_loads_nothing_until_show_images(
        web_server, page: Page, remote_host: RemoteHost) -> None:
    mailbox = make_mailbox("bob@here.example")
    html = (f'<p id="text">Our offer</p><img src="{remote_host.url}/pixel.gif" alt="pixel">'
            f'<div style="background:url({remote_host.url}/background.gif)">bg</div>'
            f'<script>fetch("{remote_host.url}/script"); parent.document.title = "owned";'
            f'</script><img src="x" onerror="fetch(\'{remote_host.url}/onerror\')">')
    message = store.deliver([mailbox], build(subject="Offer", html=html))[0]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, web_server.url, mailbox.address, PASSWORD)
    page.goto(f"{web_server.url}/mail/message/{message.pk}/")
    frame = page.frame_locator("iframe.mail-frame")
    expect(frame.locator("#text")).to_have_count(0)  # ids are not kept…
    expect(frame.get_by_text("Our offer")).to_be_visible()  # …the text is
    page.wait_for_timeout(500)
    assert remote_host.requests == []
    assert page.title() != "owned" and dialogs == []
    page.get_by_role("link", name="Show images").click()
    expect(frame.get_by_alt_text("pixel")).to_be_visible()
    page.wait_for_timeout(500)
    assert sorted(set(remote_host.requests)) == ["/background.gif", "/pixel.gif"]
    assert page.title() != "owned" and dialogs == []


def test_moving_to_junk_is_an_expunge_for_an_imap_session(web_server, mail_servers,
                                                          page: Page) -> None:
    mailbox = make_mailbox("bob@here.example")
    keep = store.deliver([mailbox], build(subject="Keep"))[0]
    spam = store.deliver([mailbox], build(subject="Cheap pills"))[0]
    imap = imaplib.IMAP4("127.0.0.1", mail_servers.port("imap"), timeout=20)
    try:
        imap.login(mailbox.address, PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"2"])
        sign_in(page, web_server.url, mailbox.address, PASSWORD)
        page.goto(f"{web_server.url}/mail/message/{spam.pk}/")
        page.locator("#reading-form").get_by_role("button", name="Junk").click()
        expect(page.get_by_text("Moved 1 message to Junk.")).to_be_visible()
        imap.noop()
        assert imap.untagged_responses.pop("EXPUNGE", None) == [b"2"]
        assert imap.uid("SEARCH", "ALL") == ("OK", [str(keep.uid).encode()])
        assert imap.select("Junk") == ("OK", [b"1"])
    finally:
        imap.logout()


def test_keyboard_archives_and_dragging_onto_a_folder_moves(web_server, page: Page) -> None:
    mailbox = make_mailbox("bob@here.example")
    for subject in ("Oldest", "Middle", "Newest"):
        store.deliver([mailbox], build(subject=subject))
    sign_in(page, web_server.url, mailbox.address, PASSWORD)
    expect(page.locator(".msg-row")).to_have_count(3)
    page.wait_for_load_state()
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("j")  # the second row: "Middle"
    page.keyboard.press("e")
    expect(page.get_by_text("Moved 1 message to Archive.")).to_be_visible()
    archive = store.get_folder(mailbox, "Archive")
    assert [m.blob.subject for m in archive.messages.all()] == ["Middle"]
    page.locator(".msg-row", has_text="Newest").drag_to(
        page.locator(".folder-list a", has_text="Junk"))
    expect(page.get_by_text("Moved 1 message to Junk.")).to_be_visible()
    junk = store.get_folder(mailbox, "Junk")
    assert [m.blob.subject for m in junk.messages.all()] == ["Newest"]
    page.keyboard.press("/")
    expect(page.get_by_label("Search mail")).to_be_focused()
