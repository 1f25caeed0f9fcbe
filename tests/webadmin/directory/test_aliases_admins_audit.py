"""Alias and administrator pages, the audit log, CSRF on the panel's forms."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.directory.audit import Actor
from apps.directory.models import Alias, AuditEntry, Role, User
from apps.directory.services import create_alias, resolve, update_account, update_mailbox
from tests.webadmin.directory.conftest import ADMIN_PASSWORD


def test_alias_create_catch_all_edit_and_delete(root_client, alice):
    bad = root_client.post("/manage/aliases/new/", {"address": "@ours.example",
                                                    "destinations": "not an address"})
    assert bad.status_code == 400 and b"field-error" in bad.content
    root_client.post("/manage/aliases/new/", {
        "address": "@ours.example", "destinations": "alice@ours.example\nbox@elsewhere.example"})
    catch_all = Alias.objects.get(address="@ours.example")
    assert resolve("anything@ours.example").external == ["box@elsewhere.example"]
    listing = root_client.get("/manage/aliases/").content.decode()
    assert "catch-all" in listing
    root_client.post(f"/manage/aliases/{catch_all.pk}/", {"destinations": "alice@ours.example",
                                                          "active": "on"})
    catch_all.refresh_from_db()
    assert catch_all.destinations == ["alice@ours.example"]
    empty = root_client.post(f"/manage/aliases/{catch_all.pk}/", {"destinations": " ",
                                                                  "active": "on"})
    assert empty.status_code == 400
    root_client.post(f"/manage/aliases/{catch_all.pk}/delete/")
    assert not Alias.objects.exists()


def test_domain_admin_aliases_stay_in_their_domains(boss_client, ours, theirs):
    mine = create_alias("info@ours.example", ["x@elsewhere.example"])
    other = create_alias("info@theirs.example", ["x@elsewhere.example"])
    listing = boss_client.get("/manage/aliases/").content.decode()
    assert "info@ours.example" in listing and "info@theirs.example" not in listing
    assert boss_client.get(f"/manage/aliases/{mine.pk}/").status_code == 200
    assert boss_client.get(f"/manage/aliases/{other.pk}/").status_code == 404
    assert boss_client.post(f"/manage/aliases/{other.pk}/delete/").status_code == 404
    refused = boss_client.post("/manage/aliases/new/", {"address": "@theirs.example",
                                                        "destinations": "a@ours.example"})
    assert b"do not administer" in refused.content


def test_superadmin_creates_edits_and_removes_a_domain_admin(root_client, ours, theirs):
    refused = root_client.post("/manage/admins/new/", {
        "email": "root@admin.example", "password": "admin password 2", "role": "domainadmin"})
    assert refused.status_code == 400 and b"exists already" in refused.content
    root_client.post("/manage/admins/new/", {
        "email": "helper@ours.example", "password": "admin password 2", "role": "domainadmin",
        "domains": [ours.pk]})
    helper = User.objects.get(email="helper@ours.example")
    assert helper.role == Role.DOMAIN_ADMIN
    assert list(helper.administered_domains.values_list("name", flat=True)) == ["ours.example"]
    listing = root_client.get("/manage/admins/").content.decode()
    assert "helper@ours.example" in listing and "ours.example" in listing
    root_client.post(f"/manage/admins/{helper.pk}/", {
        "role": "domainadmin", "domains": [ours.pk, theirs.pk], "is_active": "on"})
    assert helper.administered_domains.count() == 2
    entry = AuditEntry.objects.get(object_repr="helper@ours.example", action="update")
    assert entry.changes["domains"] == [["ours.example"], ["ours.example", "theirs.example"]]
    root_client.post(f"/manage/admins/{helper.pk}/delete/")
    assert not User.objects.filter(email="helper@ours.example").exists()


def test_the_last_superadmin_and_oneself_stay(root_client, superadmin):
    demote = root_client.post(f"/manage/admins/{superadmin.pk}/", {"role": "domainadmin",
                                                                   "is_active": "on"})
    assert demote.status_code == 400 and b"last superadmin" in demote.content
    removal = root_client.post(f"/manage/admins/{superadmin.pk}/delete/")
    assert removal.status_code == 400 and b"your own account" in removal.content
    assert User.objects.filter(pk=superadmin.pk, role=Role.SUPERADMIN).exists()


def test_domain_admin_has_no_administrators_pages(boss_client, superadmin, domain_admin):
    for url in ("/manage/admins/", "/manage/admins/new/", f"/manage/admins/{superadmin.pk}/",
                f"/manage/admins/{domain_admin.pk}/delete/"):
        assert boss_client.get(url).status_code == 404
    assert b"/manage/admins/" not in boss_client.get("/manage/domains/").content


def test_audit_log_by_role_and_filters(client, superadmin, domain_admin, alice, zed):
    update_mailbox(alice, quota=5, actor=Actor(superadmin, "192.0.2.1"))
    update_mailbox(zed, quota=6, actor=Actor(superadmin, "192.0.2.1"))
    AuditEntry.objects.filter(object_repr="zed@theirs.example").update(
        when=timezone.now() - timedelta(days=10))
    client.force_login(superadmin)
    everything = client.get("/manage/audit/").content.decode()
    assert "alice@ours.example" in everything and "zed@theirs.example" in everything
    assert "192.0.2.1" in everything and "quota:" in everything
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    recent = client.get(f"/manage/audit/?since={since}").content.decode()
    assert "<strong>alice@ours.example</strong>" in recent
    assert "<strong>zed@theirs.example</strong>" not in recent
    by_object = client.get("/manage/audit/?object=ZED").content.decode()
    assert "<strong>zed@theirs.example</strong>" in by_object
    assert "<strong>alice@ours.example</strong>" not in by_object
    assert "<strong>" not in client.get("/manage/audit/?actor=nobody").content.decode()
    client.force_login(domain_admin)
    theirs_hidden = client.get("/manage/audit/").content.decode()
    assert "<strong>alice@ours.example</strong>" in theirs_hidden
    assert "zed@theirs.example" not in theirs_hidden


@pytest.mark.parametrize("url", ["/manage/domains/new/", "/manage/mailboxes/new/",
                                 "/manage/aliases/new/", "/manage/admins/new/",
                                 "/manage/security/", "/manage/mailboxes/import/"])
def test_forms_refuse_a_post_without_csrf_token(superadmin, url):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superadmin)
    assert client.post(url, {"name": "x.example"}).status_code == 403


def test_pages_carry_labels_for_every_field(root_client, alice):
    page = root_client.get(f"/manage/mailboxes/{alice.pk}/").content.decode()
    for label in ("Display name", "Quota", "Active", "Forward to",
                  "Keep a copy when forwarding", "POP3: leave a copy on the server"):
        assert f">{label}</label>" in page
    create = root_client.get("/manage/mailboxes/new/").content.decode()
    for label in ("Address", "Password", "Quota"):
        assert f">{label}</label>" in create
    assert ">Domain name</label>" in root_client.get("/manage/domains/new/").content.decode()
    assert ADMIN_PASSWORD not in page


def test_an_administrators_own_changes_are_not_their_email_domains(client, domain_admin, ours):
    other = User.objects.create_user("chief@ours.example", ADMIN_PASSWORD, role=Role.SUPERADMIN)
    update_account(other, password="another password 5", actor=Actor(other))
    assert AuditEntry.objects.get(object_repr="chief@ours.example").domain_name == ""
    client.force_login(domain_admin)
    assert "chief@ours.example" not in client.get("/manage/audit/").content.decode()
