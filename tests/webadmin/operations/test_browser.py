"""The operations pages in a real browser against the real web server, after
real mail went through the real listeners and the outbound queue."""

from __future__ import annotations

import smtplib
from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import Page, expect

from apps.delivery.models import QueueEntry
from apps.delivery.services import RecipientSpec, enqueue
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import make_message
from tests.webadmin.operations.conftest import ADMIN_PASSWORD, run_queue


def send_to_mx(port: int, recipient: str, count: int = 1) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for _ in range(count):
            smtp.sendmail("sender@remote.example", [recipient], make_message(recipient))


def test_trace_shows_a_local_and_a_remote_message_whole_path(
        page: Page, web_server, mail_servers, receiver, superadmin, client_tls_context) -> None:
    make_mailbox("bob@ours.example")
    make_mailbox("alice@ours.example")
    send_to_mx(mail_servers.port("smtp"), "bob@ours.example")
    receiver.script.rcpt["carol@example.net"] = ["451 4.3.0 Greylisted, come back later"]
    with smtplib.SMTP("127.0.0.1", mail_servers.port("submission")) as smtp:
        smtp.starttls(context=client_tls_context)
        smtp.login("alice@ours.example", PASSWORD)
        smtp.sendmail("alice@ours.example", ["carol@example.net"], make_message(
            "carol@example.net").replace(b"sender@remote.example", b"alice@ours.example"))
    run_queue()
    run_queue(timezone.now() + timedelta(hours=1))
    assert len(receiver.script.messages) == 1

    sign_in(page, web_server.url, superadmin.email, ADMIN_PASSWORD)
    page.get_by_role("link", name="Message trace").first.click()
    page.get_by_label("Address").fill("bob@ours.example")
    page.get_by_role("button", name="Search").click()
    local = page.locator("article.trace-message")
    expect(local).to_have_count(1)
    stages = local.locator(".timeline > li")
    expect(stages).to_have_count(3)
    expect(stages.nth(0)).to_contain_text("Received over SMTP from 127.0.0.1")
    expect(stages.nth(1)).to_contain_text("SPF none")
    expect(stages.nth(1)).to_contain_text("→ INBOX")
    expect(stages.nth(2)).to_contain_text("Filed into bob@ours.example, folder INBOX")

    page.get_by_label("Address").fill("carol@example.net")
    page.get_by_role("button", name="Search").click()
    remote = page.locator("article.trace-message")
    expect(remote).to_have_count(1)
    stages = remote.locator(".timeline > li")
    expect(stages).to_have_count(4)
    expect(stages.nth(0)).to_contain_text("authenticated as alice@ours.example")
    expect(stages.nth(1)).to_contain_text("Queued for <carol@example.net>")
    expect(stages.nth(2)).to_contain_text("Deferred")
    expect(stages.nth(2)).to_contain_text("451 4.3.0 Greylisted, come back later")
    expect(stages.nth(3)).to_contain_text("Delivered to <carol@example.net> at 127.0.0.1")
    expect(stages.nth(3)).to_contain_text("attempt 2")


def test_a_queue_entry_is_retried_from_the_panel(page: Page, web_server, receiver,
                                                 superadmin) -> None:
    make_mailbox("alice@ours.example")
    receiver.script.rcpt["carol@example.net"] = ["451 4.3.0 Try later"]
    queued = enqueue(sender="alice@ours.example", data=make_message("carol@example.net"),
                     recipients=[RecipientSpec("carol@example.net")])
    run_queue()
    entry = QueueEntry.objects.get()
    assert entry.next_attempt > timezone.now() + timedelta(minutes=1)

    sign_in(page, web_server.url, superadmin.email, ADMIN_PASSWORD)
    page.goto(f"{web_server.url}/manage/queue/")
    row = page.get_by_role("row").filter(has_text=queued.queue_id)
    expect(row).to_contain_text("451 4.3.0 Try later")
    row.get_by_role("button", name=f"Retry now {queued.queue_id}").click()
    expect(page.get_by_role("status").first).to_contain_text("will be tried again now")
    expect(page.locator("td.next-attempt")).to_have_text("now")

    run_queue()  # what the next beat and a worker do
    assert not QueueEntry.objects.exists()
    (received,) = receiver.script.messages
    assert received.recipients == ["carol@example.net"]


def test_dashboard_shows_the_counts_after_mail_flowed(page: Page, web_server, mail_servers,
                                                      superadmin) -> None:
    make_mailbox("bob@ours.example")
    send_to_mx(mail_servers.port("smtp"), "bob@ours.example", count=3)
    sign_in(page, web_server.url, superadmin.email, ADMIN_PASSWORD)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    day = page.locator("section.flow").first
    expect(day.locator(".legend")).to_contain_text("Received 3")
    expect(day.locator(".legend")).to_contain_text("Delivered locally 3")
    day.get_by_text("The figures as a table").click()
    table = day.get_by_role("table")
    expect(table).to_be_visible()
    expect(table.locator("tbody tr").last).to_contain_text("3")
    expect(page.get_by_text("No mail delivered yet.")).to_have_count(0)
