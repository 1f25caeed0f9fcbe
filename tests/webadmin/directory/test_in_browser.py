"""The admin panel in a real browser (Debian's Chromium) against the real web
server process: what an administrator does, end to end."""

from __future__ import annotations

import imaplib
import re
import smtplib
import time
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Page, expect

from apps.directory.models import Role, SecondFactor, User
from tests.conftest import database_url, sign_in
from tests.dns_server import TinyDnsServer
from tests.factories import make_domain, make_mailbox
from tests.web_server import WebServerProcess
from tests.webadmin.directory.conftest import ADMIN_PASSWORD
from tests.webadmin.directory.test_dns_page import MAIL_HOST, zone_for

pytestmark = pytest.mark.slow

NEW_PASSWORD = "set in the panel 42"


def test_create_domain_and_mailbox_then_mail_arrives_over_smtp_and_imap(
        web_server, mail_servers, page: Page) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    sign_in(page, web_server.url, "root@admin.example", ADMIN_PASSWORD)
    page.get_by_role("link", name="Domains").click()
    page.get_by_role("link", name="New domain").click()
    page.get_by_label("Domain name").fill("fresh.example")
    page.get_by_role("button", name="Create domain").click()
    expect(page.get_by_role("heading", name="DNS records of fresh.example")).to_be_visible()
    page.goto(f"{web_server.url}/manage/mailboxes/new/?domain=fresh.example")
    page.get_by_label("Address").fill("ann@fresh.example")
    page.get_by_label("Password").fill("weak")
    expect(page.get_by_text("Strength: too short")).to_be_visible()
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_label("Quota").fill("50 MB")
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.get_by_role("status")).to_contain_text("Mailbox ann@fresh.example created.")

    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp"), timeout=20) as smtp:
        smtp.sendmail("sender@elsewhere.example", ["ann@fresh.example"],
                      b"From: sender@elsewhere.example\r\nTo: ann@fresh.example\r\n"
                      b"Subject: welcome aboard\r\nMessage-ID: <w1@elsewhere.example>\r\n"
                      b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n\r\nHello Ann.\r\n")
    imap = imaplib.IMAP4("127.0.0.1", mail_servers.port("imap"), timeout=20)
    try:
        imap.login("ann@fresh.example", NEW_PASSWORD)
        imap.select("INBOX")
        _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: welcome aboard" in data[0][1]
    finally:
        imap.logout()
    page.goto(f"{web_server.url}/manage/mailboxes/?q=ann")
    expect(page.locator("td.usage")).not_to_contain_text("0\xa0bytes of")


def test_domain_admin_cannot_reach_another_domains_pages(web_server, page: Page) -> None:
    ours, theirs = make_domain("ours.example"), make_domain("theirs.example")
    zed = make_mailbox("zed@theirs.example")
    boss = User.objects.create_user("boss@ours.example", ADMIN_PASSWORD, role=Role.DOMAIN_ADMIN)
    boss.administered_domains.add(ours)
    sign_in(page, web_server.url, boss.email, ADMIN_PASSWORD)
    expect(page).to_have_url(f"{web_server.url}/manage/")
    page.goto(f"{web_server.url}/manage/domains/{ours.pk}/")
    expect(page.get_by_role("heading", name="ours.example")).to_be_visible()
    for url in (f"/manage/domains/{theirs.pk}/", f"/manage/domains/{theirs.pk}/dns/",
                f"/manage/mailboxes/{zed.pk}/", "/manage/admins/"):
        response = page.goto(web_server.url + url)
        assert response is not None and response.status == 404, url
    page.goto(f"{web_server.url}/manage/mailboxes/")
    expect(page.get_by_text("zed@theirs.example")).to_have_count(0)


def test_dns_page_marks_records_against_a_local_dns_server(settings, transactional_db,
                                                           page: Page) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    settings.MAILHOST_HOSTNAME = settings.MAILHOST_PUBLIC_HOSTNAME = MAIL_HOST
    domain = make_domain("ours.example")
    # MX and DKIM right, SPF wrong, DMARC missing; SRV, CNAME, MTA-STS and TLSRPT right.
    dns = TinyDnsServer(zone_for(domain))
    server = WebServerProcess(database_url(), Path(settings.MAILHOST_STORAGE_ROOT), env={
        "MAILHOST_HOSTNAME": MAIL_HOST,
        "MAILHOST_DNS_RESOLVER": "mailhost.dns.DnsPythonResolver",
        "MAILHOST_DNS_NAMESERVERS": "127.0.0.1", "MAILHOST_DNS_PORT": str(dns.port),
        "MAILHOST_DNS_TIMEOUT": "2"})
    try:
        sign_in(page, server.url, "root@admin.example", ADMIN_PASSWORD)
        page.goto(f"{server.url}/manage/domains/{domain.pk}/dns/")
        rows = page.locator("table.dns tbody tr")
        expect(rows).to_have_count(5 + 11)
        expect(rows.nth(0)).to_contain_text("published")
        expect(rows.nth(1)).to_contain_text("different")
        expect(rows.nth(1)).to_contain_text("Found: v=spf1 a ~all")
        expect(rows.nth(2)).to_contain_text("published")
        expect(rows.nth(3)).to_contain_text("published")
        expect(rows.nth(4)).to_contain_text("missing")
        for index in range(5, 5 + 11):
            expect(rows.nth(index)).to_contain_text("published")
    finally:
        server.stop()
        dns.close()


def test_totp_enrolment_then_sign_in_asks_for_the_code(web_server, page: Page) -> None:
    admin = User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    sign_in(page, web_server.url, admin.email, ADMIN_PASSWORD)
    page.get_by_role("link", name="Two-factor sign-in").click()
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(page.get_by_alt_text("QR code for your authenticator app")).to_be_visible()
    totp = pyotp.TOTP(SecondFactor.objects.get(user=admin).secret)
    page.get_by_label("Code").fill(totp.now())
    page.get_by_role("button", name="Verify").click()
    codes = page.locator("ul.recovery-codes li")
    expect(codes).to_have_count(10)
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, web_server.url, admin.email, ADMIN_PASSWORD)
    expect(page).to_have_url(f"{web_server.url}/signin/code/")
    page.get_by_label("Code").fill("000000")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    page.get_by_label("Code").fill(totp.at(time.time() + 30))  # the next step's code
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{web_server.url}/manage/")


def test_csv_import_shows_progress_and_failed_rows(web_server, page: Page, tmp_path) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    make_domain("ours.example")
    rows = [f"user{n}@ours.example,a good password {n},10," for n in range(45)]
    rows[7] = "broken@nowhere.example,a good password,,"
    upload = tmp_path / "boxes.csv"
    upload.write_text("address,password,quota_mb,display_name\n" + "\n".join(rows) + "\n")
    sign_in(page, web_server.url, "root@admin.example", ADMIN_PASSWORD)
    page.goto(f"{web_server.url}/manage/mailboxes/import/")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("44 created, 1 failed.")).to_be_visible()
    expect(page.locator("progress")).to_have_attribute("value", "45")
    failed = page.locator("[data-import-failures] tr")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text(re.compile(r"9\s*broken@nowhere.example\s*domain nowhere"))
