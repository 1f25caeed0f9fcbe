"""Mailbox pages: list and filters, create, edit, password, delete, CSV."""

from __future__ import annotations

import csv
import io

from django.core.files.uploadedfile import SimpleUploadedFile

from apps.directory.models import AuditEntry, Mailbox
from apps.directory.services import authenticate, update_mailbox
from apps.pop3.models import MailboxOptions
from apps.store import services as store
from tests.factories import make_mailbox

MB = 1024 * 1024


def test_list_shows_usage_bars_and_filters(root_client, alice, zed):
    update_mailbox(alice, quota=1000)
    store.deliver([alice], b"Subject: big\r\n\r\n" + b"x" * 950)
    update_mailbox(zed, active=False)
    page = root_client.get("/manage/mailboxes/").content.decode()
    assert 'max="1000" value="' in page and "<meter" in page
    high = root_client.get("/manage/mailboxes/?usage=high").content.decode()
    assert "alice@ours.example" in high and "zed@theirs.example" not in high
    disabled = root_client.get("/manage/mailboxes/?status=disabled").content.decode()
    assert "zed@theirs.example" in disabled and "alice@ours.example" not in disabled
    by_domain = root_client.get("/manage/mailboxes/?domain=theirs.example").content.decode()
    assert "zed@theirs.example" in by_domain and "alice@ours.example" not in by_domain
    search = root_client.get("/manage/mailboxes/?q=ALI").content.decode()
    assert "alice@ours.example" in search and "zed@" not in search


def test_pagination_pages_through_the_list(root_client, ours):
    for number in range(30):
        make_mailbox(f"user{number:02}@ours.example")
    first = root_client.get("/manage/mailboxes/?size=25").content.decode()
    assert "1–25 of 30" in first and "user24@" in first and "user25@" not in first
    second = root_client.get("/manage/mailboxes/?size=25&page=2").content.decode()
    assert "26–30 of 30" in second and "user25@" in second and 'rel="next"' not in second


def test_create_with_field_errors_then_success(root_client, ours):
    weak = root_client.post("/manage/mailboxes/new/", {"address": "new@ours.example",
                                                       "password": "short"})
    assert weak.status_code == 400 and b"too short" in weak.content
    unhosted = root_client.post("/manage/mailboxes/new/", {
        "address": "new@elsewhere.example", "password": "a good password 1"})
    assert b"is not hosted here" in unhosted.content
    bad_quota = root_client.post("/manage/mailboxes/new/", {
        "address": "new@ours.example", "password": "a good password 1", "quota": "-5"})
    assert bad_quota.status_code == 400
    created = root_client.post("/manage/mailboxes/new/", {
        "address": "New@ours.example", "password": "a good password 1", "quota": "50"})
    mailbox = Mailbox.objects.get(address="new@ours.example")
    assert created["Location"] == f"/manage/mailboxes/{mailbox.pk}/"
    assert mailbox.quota == 50 * MB
    assert authenticate("new@ours.example", "a good password 1") == mailbox


def test_edit_forwarding_quota_and_pop3_copy(root_client, alice):
    response = root_client.post(f"/manage/mailboxes/{alice.pk}/", {
        "display_name": "Alice A.", "quota": "20", "active": "on",
        "forward_to": "one@elsewhere.example\ntwo@elsewhere.example", "leave_copy": "on"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.forward_to == ["one@elsewhere.example", "two@elsewhere.example"]
    assert not alice.forward_keep_copy and alice.quota == 20 * MB
    assert alice.user.display_name == "Alice A."
    assert MailboxOptions.objects.get(mailbox=alice).leave_copy
    looping = root_client.post(f"/manage/mailboxes/{alice.pk}/", {
        "quota": "20", "forward_to": "alice@ours.example"})
    assert looping.status_code == 400 and b"cannot forward to itself" in looping.content


def test_quota_is_typed_and_shown_in_units_without_losing_bytes(root_client, alice):
    update_mailbox(alice, quota=10_000)
    page = root_client.get(f"/manage/mailboxes/{alice.pk}/").content.decode()
    assert 'value="10000 B"' in page  # not rounded to 0 MB (unlimited)
    root_client.post(f"/manage/mailboxes/{alice.pk}/", {"quota": "1.5 GB", "active": "on"})
    alice.refresh_from_db()
    assert alice.quota == 1536 * MB
    assert 'value="1536 MB"' in root_client.get(f"/manage/mailboxes/{alice.pk}/").content.decode()
    wrong = root_client.post(f"/manage/mailboxes/{alice.pk}/", {"quota": "2 parsecs"})
    assert wrong.status_code == 400 and b"such as 500 MB" in wrong.content


def test_new_password_takes_effect_and_is_never_shown(root_client, alice):
    response = root_client.post(f"/manage/mailboxes/{alice.pk}/password/",
                                {"password": "brand new secret 7"})
    assert response.status_code == 302
    assert authenticate("alice@ours.example", "brand new secret 7") is not None
    audit = root_client.get("/manage/audit/").content.decode()
    assert "password" in audit and "brand new secret 7" not in audit
    assert AuditEntry.objects.get(action="password").changes == {"password": "changed"}


def test_delete_confirms_then_removes(root_client, alice):
    assert b"Delete alice@ours.example" in root_client.get(
        f"/manage/mailboxes/{alice.pk}/delete/").content
    root_client.post(f"/manage/mailboxes/{alice.pk}/delete/")
    assert not Mailbox.objects.filter(address="alice@ours.example").exists()


def test_csv_import_reports_failed_rows_and_keeps_the_good_ones(root_client, ours, alice):
    text = ("address,password,quota_mb,display_name\n"
            "carol@ours.example,a good password 1,10,Carol\n"
            "alice@ours.example,a good password 1,,\n"
            "dave@ours.example,short,,\n"
            "erin@ours.example,a good password 1,lots,\n"
            "frank@ours.example,a good password 1,,Frank\n")
    upload = SimpleUploadedFile("boxes.csv", text.encode(), content_type="text/csv")
    page = root_client.post("/manage/mailboxes/import/", {"file": upload}).content.decode()
    assert "2 created, 3 failed." in page
    assert "<td>3</td><td>alice@ours.example</td><td>alice@ours.example exists already" in page
    assert "<td>4</td><td>dave@ours.example</td>" in page
    assert "<td>5</td><td>erin@ours.example</td><td>quota_mb must be" in page
    assert set(Mailbox.objects.values_list("address", flat=True)) == {
        "alice@ours.example", "carol@ours.example", "frank@ours.example"}
    assert Mailbox.objects.get(address="carol@ours.example").quota == 10 * MB


def test_csv_import_in_parts_answers_json_with_line_numbers(root_client, ours):
    response = root_client.post("/manage/mailboxes/import/", {
        "csv": "address,password\nx@ours.example,a good password 1\n"
               "y@nowhere.example,pw pw pw pw",
        "first_line": "21"})  # the header's line: the rows are 22 and 23
    assert response.json()["results"] == [
        {"line": 22, "address": "x@ours.example", "ok": True, "error": ""},
        {"line": 23, "address": "y@nowhere.example", "ok": False,
         "error": "domain nowhere.example is not hosted here"}]


def test_domain_admin_imports_only_into_their_domains(boss_client, ours, theirs):
    page = boss_client.post("/manage/mailboxes/import/", {"file": SimpleUploadedFile(
        "b.csv", b"in@ours.example,a good password 1\nout@theirs.example,a good password 1\n")})
    assert "you do not administer its domain" in page.content.decode()
    assert list(Mailbox.objects.values_list("address", flat=True)) == ["in@ours.example"]


def test_csv_export_has_the_filtered_mailboxes(root_client, alice, zed):
    store.deliver([alice], b"Subject: x\r\n\r\nbody\r\n")
    update_mailbox(alice, display_name="=HYPERLINK(\"http://evil.example\")")
    response = root_client.get("/manage/mailboxes/export.csv?domain=ours.example")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["address", "display_name", "quota_mb", "used_bytes", "active", "created"]
    assert [row[0] for row in rows[1:]] == ["alice@ours.example"]
    assert int(rows[1][3]) > 0
    assert rows[1][1].startswith("'=HYPERLINK")  # not a formula in a spreadsheet


def test_domain_admin_reaches_only_their_mailboxes(boss_client, alice, zed):
    listing = boss_client.get("/manage/mailboxes/").content.decode()
    assert "alice@ours.example" in listing and "zed@theirs.example" not in listing
    for url in (f"/manage/mailboxes/{zed.pk}/", f"/manage/mailboxes/{zed.pk}/password/",
                f"/manage/mailboxes/{zed.pk}/delete/"):
        assert boss_client.get(url).status_code == 404
        assert boss_client.post(url, {"password": "x y z w 1234"}).status_code == 404
    refused = boss_client.post("/manage/mailboxes/new/", {
        "address": "new@theirs.example", "password": "a good password 1"})
    assert refused.status_code == 400 and b"do not administer" in refused.content
    export = b"".join(boss_client.get("/manage/mailboxes/export.csv").streaming_content)
    assert b"zed@" not in export and b"alice@" in export


def test_hostile_filters_and_rows_get_answers_not_errors(root_client, alice):
    for url in ("/manage/mailboxes/?q=a%00b&domain=%00&page=-3&size=x",
                "/manage/domains/?q=%00", "/manage/aliases/?q=%00&domain=%00",
                "/manage/admins/?q=%00", "/manage/audit/?actor=%00&since=yesterday",
                "/manage/mailboxes/new/?domain=%00"):
        assert root_client.get(url).status_code == 200, url
    response = root_client.post("/manage/mailboxes/import/", {
        "csv": "nul@ours.example,a good password 1,,Bad\x00Name\n", "first_line": "x"})
    assert response.json()["results"] == [{"line": 1, "address": "nul@ours.example",
                                           "ok": False, "error": "contains a NUL character"}]
