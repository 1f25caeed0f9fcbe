"""Sieve on every filing path, once (apps/delivery/filing.py), seen with real
clients: smtplib on submission and on the MX (with the checks on and off, to
an alias of two users), the webmail's send, IMAP for where mail landed, a
test SMTP sink for what went out through the queue; the webmail's auto-reply
set in a browser and its forwarding, fetched back with sieve-connect. An
import is not a delivery: it runs no script."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from apps.delivery import srs
from apps.delivery.models import OutboundMessage, VacationReply
from apps.delivery.rules import GENERATED_NAME
from apps.directory import services as directory
from apps.sieve import services as sieve
from apps.store.models import Message
from apps.transfer.importing import MboxSource, import_mail
from tests.conftest import sign_in
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.factories import PASSWORD, make_mailbox
from tests.sieve.test_managesieve import sieve_connect
from tests.smtp.helpers import make_message
from tests.webmail.writing_helpers import signed_in

# Alice sorts by subject, flags what she sorts and sends one copy to her phone.
SORTING = """require ["fileinto", "imap4flags", "copy"];
if header :contains "subject" "sorted" {
    fileinto :flags "$sorted" "Sorted";
    redirect :copy "phone@example.net";
}
"""


@pytest.fixture
def people(transactional_db):
    alice = make_mailbox("alice@sieve.example")
    bob = make_mailbox("bob@sieve.example")
    sieve.put_script(alice, "sorting", SORTING)
    sieve.set_active(alice, "sorting")
    return alice, bob


@pytest.fixture
def sink(settings) -> Iterator[Receiver]:
    """Every remote server, as a test SMTP server that keeps what it gets."""
    server = Receiver(None).start()
    settings.MAILHOST_TRANSPORTS = f"*=127.0.0.1:{server.port}"
    settings.MAILHOST_QUEUE_KICK = False
    yield server
    server.stop()


def subjects(port: int, address: str, folder: str) -> list[tuple[bytes, str]]:
    """(FLAGS, Subject) of each message in a folder, over IMAP."""
    with imaplib.IMAP4("127.0.0.1", port) as imap:
        imap.login(address, PASSWORD)
        status, (count,) = imap.select(f'"{folder}"', readonly=True)
        if status != "OK" or count == b"0":
            return []
        _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return [(item[0], item[1].decode().strip().removeprefix("Subject: "))
            for item in data if isinstance(item, tuple)]


def assert_sorted_once(port: int, subject: str) -> None:
    """Filed by Alice's script into Sorted, flagged, not in INBOX, and one
    copy queued for her phone: the script ran, and ran once."""
    ((flags, filed),) = subjects(port, "alice@sieve.example", "Sorted")
    assert filed == subject and b"$sorted" in flags
    assert subjects(port, "alice@sieve.example", "INBOX") == []
    assert OutboundMessage.objects.get().entries.get().recipient == "phone@example.net"


def test_submission_to_a_local_user(mail_servers, people, sink, client_tls_context):
    with smtplib.SMTP("localhost", mail_servers.port("submission")) as client:
        client.starttls(context=client_tls_context)
        client.login("bob@sieve.example", PASSWORD)
        client.sendmail("bob@sieve.example", ["alice@sieve.example"],
                        make_message("alice@sieve.example", subject="sorted by submission")
                        .replace(b"sender@remote.example", b"bob@sieve.example"))
    assert_sorted_once(mail_servers.port("imap"), "sorted by submission")
    run_queue()
    (copy,) = sink.script.messages
    assert copy.recipients == ["phone@example.net"]
    # The original envelope sender: of our own domain, it passes SPF as it is.
    assert copy.mail_from == "bob@sieve.example"


def test_the_webmails_send_to_a_local_user(mail_servers, people, sink, client):
    response = signed_in(client, people[1]).post("/mail/compose/", {
        "from_address": "bob@sieve.example", "to": "alice@sieve.example", "cc": "", "bcc": "",
        "subject": "sorted by the webmail", "body": "Hi", "action": "send"})
    assert response.status_code == 302
    assert_sorted_once(mail_servers.port("imap"), "sorted by the webmail")


@pytest.mark.parametrize("antispam", [True, False], ids=["checked", "unchecked"])
def test_inbound_with_the_checks_on_and_off(mail_servers, people, sink, settings, antispam):
    settings.MAILHOST_ANTISPAM = antispam
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.sendmail("dave@remote.example", ["alice@sieve.example"],
                      make_message("alice@sieve.example", subject="sorted inbound"))
    assert_sorted_once(mail_servers.port("imap"), "sorted inbound")


def test_an_alias_runs_each_users_script(mail_servers, people, sink):
    _, bob = people
    sieve.put_script(bob, "team", 'require "fileinto"; fileinto "Team";')
    sieve.set_active(bob, "team")
    directory.create_alias("team@sieve.example", ["alice@sieve.example", "bob@sieve.example"])
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.sendmail("dave@remote.example", ["team@sieve.example"],
                      make_message("team@sieve.example", subject="sorted for the team"))
    port = mail_servers.port("imap")
    assert_sorted_once(port, "sorted for the team")
    assert [s for _, s in subjects(port, "bob@sieve.example", "Team")] == ["sorted for the team"]
    assert subjects(port, "bob@sieve.example", "INBOX") == []


def test_an_import_runs_no_script(people, tmp_path):
    alice, _ = people
    sieve.put_script(alice, "sorting", "discard;")
    mbox = tmp_path / "old.mbox"
    mbox.write_bytes(b"From dave@remote.example Thu Nov 26 10:00:00 2026\n"
                     + make_message("alice@sieve.example", subject="sorted, long ago")
                     .replace(b"\r\n", b"\n") + b"\n")
    import_mail(alice, MboxSource(mbox))
    # Kept where the source had it, though the active script discards all.
    assert Message.objects.filter(folder__mailbox=alice, folder__name="INBOX").count() == 1
    assert not OutboundMessage.objects.exists()


def inbound(port: int, sender: str, subject: str) -> None:
    message = make_message("alice@sieve.example", subject=subject).replace(
        b"sender@remote.example", sender.encode())
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail(sender, ["alice@sieve.example"], message)


@pytest.mark.slow
def test_the_auto_reply_set_in_the_browser_is_sieve_and_answers_once_per_days(
        web_server, page: Page, mail_servers, sink, tmp_path):
    make_mailbox("alice@sieve.example")
    sign_in(page, web_server.url, "alice@sieve.example", PASSWORD)
    page.goto(f"{web_server.url}/mail/settings/")
    page.get_by_label("Send an automatic reply").check()
    page.get_by_label("Subject of the reply").fill("Away")
    page.get_by_label("Text of the reply").fill("Back on Monday.")
    page.get_by_role("button", name="Save automatic reply").click()
    expect(page.get_by_text("Automatic reply on.")).to_be_visible()
    expect(page.locator(".filters li", has_text=GENERATED_NAME)).to_contain_text("(active)")

    # What the page set is what a ManageSieve client lists and gets.
    port = mail_servers.port("managesieve")
    listing = sieve_connect(port, "--list")
    assert listing.returncode == 0 and GENERATED_NAME in listing.stdout, listing.stderr
    fetched = tmp_path / "got.siv"
    download = sieve_connect(port, "--download", "--remotesieve", GENERATED_NAME,
                             script=fetched)
    assert download.returncode == 0, download.stderr
    assert 'vacation :subject "Away" "Back on Monday.";' in fetched.read_text()

    smtp_port = mail_servers.port("smtp")
    inbound(smtp_port, "dave@example.net", "one")
    inbound(smtp_port, "dave@example.net", "two")  # within :days: no second reply
    run_queue()
    (reply,) = sink.script.messages
    assert reply.mail_from == "<>" and reply.recipients == ["dave@example.net"]
    assert b"Subject: Away" in reply.data and b"Auto-Submitted: auto-replied" in reply.data
    # A week later (the site's :days), the same sender is answered again.
    VacationReply.objects.update(replied=timezone.now() - timedelta(days=8))
    inbound(smtp_port, "dave@example.net", "three")
    run_queue()
    assert len(sink.script.messages) == 2
    assert len(subjects(mail_servers.port("imap"), "alice@sieve.example", "INBOX")) == 3


def test_forwarding_set_in_the_webmail_is_a_redirect_with_srs(
        mail_servers, sink, client, tmp_path):
    alice = make_mailbox("alice@sieve.example")
    response = signed_in(client, alice).post("/mail/settings/", {
        "section": "forwarding", "forwarding-forward_to": "alice@elsewhere.example",
        "forwarding-forward_keep_copy": "on"})
    assert response.status_code == 302
    fetched = tmp_path / "got.siv"
    download = sieve_connect(mail_servers.port("managesieve"), "--download", "--remotesieve",
                             GENERATED_NAME, script=fetched)
    assert download.returncode == 0, download.stderr
    assert 'redirect :copy "alice@elsewhere.example";' in fetched.read_text()

    inbound(mail_servers.port("smtp"), "dave@example.net", "passed on")
    run_queue()
    (copy,) = sink.script.messages
    assert copy.recipients == ["alice@elsewhere.example"]
    # SRS (apps/delivery/srs.py): our domain in the envelope sender, so that
    # SPF passes where it goes; a bounce comes back to us for dave.
    assert copy.mail_from.startswith("SRS0=") and copy.mail_from.endswith("@sieve.example")
    assert srs.reverse(copy.mail_from) == "dave@example.net"
    assert b"Subject: passed on" in copy.data
    assert [s for _, s in subjects(mail_servers.port("imap"), "alice@sieve.example",
                                   "INBOX")] == ["passed on"]  # the copy kept
