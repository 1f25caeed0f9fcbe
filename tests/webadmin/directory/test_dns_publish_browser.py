"""The DNS page publishing to Knot DNS, in Chromium against the real web
server: the target form, the changes shown, Apply, drift after a hand edit."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from apps.directory.models import AuditEntry, User
from tests.conftest import FOREIGN_TXT, database_url, sign_in
from tests.knot_server import KEY_NAME
from tests.web_server import WebServerProcess
from tests.webadmin.directory.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow


def test_the_dns_page_shows_the_changes_and_applies_them(
        transactional_db, settings, knot, ours, page: Page) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    server = WebServerProcess(database_url(), Path(settings.MAILHOST_STORAGE_ROOT), env={
        "MAILHOST_HOSTNAME": settings.MAILHOST_HOSTNAME,
        "MAILHOST_DNS_RESOLVER": "mailhost.dns.DnsPythonResolver",
        "MAILHOST_DNS_NAMESERVERS": "127.0.0.1", "MAILHOST_DNS_PORT": str(knot.port)})
    try:
        sign_in(page, server.url, "root@admin.example", ADMIN_PASSWORD)
        page.goto(f"{server.url}/manage/domains/{ours.pk}/dns/")
        expect(page.get_by_text("Publish the records below at the domain's DNS provider")
               ).to_be_visible()

        # A wrong secret: the page says the server refused the key.
        page.get_by_label("Primary server").fill("127.0.0.1")
        page.get_by_label("Port").fill(str(knot.port))
        page.get_by_label("TSIG key name").fill(KEY_NAME)
        page.get_by_label("TSIG algorithm").select_option("hmac-sha256")
        page.get_by_label("TSIG secret").fill(base64.b64encode(b"x" * 32).decode())
        page.get_by_role("button", name="Save target").click()
        expect(page.get_by_role("alert")).to_contain_text("refused TSIG key mailhost-update.")

        # The form stays open while the zone cannot be read.
        page.get_by_label("TSIG secret").fill(knot.secret)
        page.get_by_role("button", name="Save target").click()
        changes = page.get_by_role("table", name="Changes to publish").locator("tbody tr")
        expect(changes.filter(has_text="10 mx.hosting.example.")).to_contain_text("add")
        count = changes.count()
        assert count > 10
        assert knot.query("ours.example", "MX") == []

        page.get_by_role("button", name=re.compile(rf"^Apply {count} changes$")).click()
        expect(page.get_by_role("status")).to_contain_text(f"{count} changes published.")
        expect(page.get_by_text("up to date")).to_be_visible()
        assert knot.query("ours.example", "MX") == ["10 mx.hosting.example."]
        assert sorted(knot.query("ours.example", "TXT")) == sorted(
            [FOREIGN_TXT, '"v=spf1 mx -all"'])
        assert AuditEntry.objects.filter(action="publish", actor__email="root@admin.example"
                                         ).count() == count

        # A hand edit: shown as drift, and the next Apply puts our record back.
        knot.edit(delete=("_dmarc.ours.example.", "TXT"),
                  add=("_dmarc.ours.example.", "TXT", '"v=DMARC1; p=none"'))
        page.reload()
        expect(page.get_by_role("alert")).to_contain_text(
            "Changed outside Mailhost: _dmarc.ours.example. TXT")
        expect(page.get_by_role("alert")).to_contain_text('"v=DMARC1; p=none"')
        page.get_by_role("button", name="Apply 2 changes").click()
        expect(page.get_by_text("up to date")).to_be_visible()
        assert knot.query("_dmarc.ours.example", "TXT") == [
            '"v=DMARC1; p=quarantine; adkim=r; aspf=r"']
    finally:
        server.stop()
