"""Domain pages: list, create, settings, disable, delete, per role."""

from __future__ import annotations

from apps.directory.models import AuditEntry, Domain, Mailbox
from apps.directory.services import create_alias
from apps.store import services as store
from tests.factories import make_mailbox


def test_list_shows_mailbox_count_and_storage_and_searches(root_client, alice, zed):
    store.deliver([alice], b"Subject: hi\r\n\r\n" + b"x" * 3000)
    page = root_client.get("/manage/domains/").content.decode()
    assert "ours.example" in page and "theirs.example" in page
    assert "2.9\xa0KB" in page or "3.0\xa0KB" in page  # the delivered message
    found = root_client.get("/manage/domains/?q=THEIRS").content.decode()
    assert "theirs.example" in found and "ours.example" not in found


def test_create_gives_field_errors_then_creates(root_client, ours):
    bad = root_client.post("/manage/domains/new/", {"name": "not a domain!", "max_mailboxes": 0})
    assert bad.status_code == 400
    assert b'class="field-error"' in bad.content
    taken = root_client.post("/manage/domains/new/", {"name": "ours.example", "max_mailboxes": 0})
    assert b"exists already" in taken.content
    negative = root_client.post("/manage/domains/new/", {"name": "new.example",
                                                         "max_mailboxes": -1})
    assert negative.status_code == 400 and not Domain.objects.filter(name="new.example").exists()
    created = root_client.post("/manage/domains/new/", {"name": "New.Example",
                                                        "default_quota": 500, "max_mailboxes": 3})
    domain = Domain.objects.get(name="new.example")
    assert created["Location"] == f"/manage/domains/{domain.pk}/dns/"
    assert domain.default_quota == 500 * 1024 * 1024 and domain.max_mailboxes == 3
    entry = AuditEntry.objects.get(object_repr="new.example")
    assert entry.action == "create" and entry.actor_email == "root@admin.example"


def test_settings_are_saved_and_recorded(root_client, ours):
    response = root_client.post(f"/manage/domains/{ours.pk}/", {
        "default_quota": 100, "max_mailboxes": 10, "greylisting": "on", "spam_threshold": "6.5",
        "app_passwords_required": "on", "active": "on"})
    assert response.status_code == 302
    ours.refresh_from_db()
    assert (ours.default_quota, ours.max_mailboxes, ours.greylisting, ours.spam_threshold,
            ours.app_passwords_required) == (100 * 1024 * 1024, 10, True, 6.5, True)
    entry = AuditEntry.objects.get(action="update", object_repr="ours.example")
    assert entry.changes["spam_threshold"] == [None, 6.5]
    assert entry.changes["app_passwords_required"] == [False, True]
    bad = root_client.post(f"/manage/domains/{ours.pk}/", {
        "default_quota": "lots", "max_mailboxes": 10, "active": "on"})
    assert bad.status_code == 400 and b"Give a size such as 500 MB" in bad.content


def test_disable_and_enable(root_client, ours):
    root_client.post(f"/manage/domains/{ours.pk}/active/", {"active": "0"})
    ours.refresh_from_db()
    assert not ours.active
    assert b"Enable domain" in root_client.get(f"/manage/domains/{ours.pk}/").content
    root_client.post(f"/manage/domains/{ours.pk}/active/", {"active": "1"})
    ours.refresh_from_db()
    assert ours.active


def test_delete_says_what_goes_then_removes_it_all(root_client, alice):
    make_mailbox("bob@ours.example")
    create_alias("info@ours.example", ["alice@ours.example"])
    store.deliver([alice], b"Subject: one\r\n\r\nbody\r\n")
    store.deliver([alice], b"Subject: two\r\n\r\nbody\r\n")
    page = root_client.get(f"/manage/domains/{alice.domain_id}/delete/").content.decode()
    assert "<strong>2</strong> mailboxes" in page
    assert "<strong>2</strong> messages" in page
    assert "<strong>1</strong> alias," in page
    root_client.post(f"/manage/domains/{alice.domain_id}/delete/")
    assert not Domain.objects.filter(name="ours.example").exists()
    assert not Mailbox.objects.exists()


def test_domain_admin_sees_only_their_domains_and_changes_none(boss_client, ours, theirs):
    listing = boss_client.get("/manage/domains/").content.decode()
    assert "ours.example" in listing and "theirs.example" not in listing
    assert "New domain" not in listing
    assert boss_client.get(f"/manage/domains/{ours.pk}/").status_code == 200
    for url in (f"/manage/domains/{theirs.pk}/", f"/manage/domains/{theirs.pk}/dns/",
                f"/manage/domains/{theirs.pk}/delete/", "/manage/domains/new/"):
        assert boss_client.get(url).status_code == 404, url
    assert boss_client.post(f"/manage/domains/{ours.pk}/", {
        "default_quota": 1, "max_mailboxes": 1, "active": "on"}).status_code == 404
    assert boss_client.post(f"/manage/domains/{ours.pk}/active/",
                            {"active": "0"}).status_code == 404
    ours.refresh_from_db()
    assert ours.active and ours.max_mailboxes == 0


def test_mailbox_user_and_anonymous_are_kept_out_of_every_page(client, alice, superadmin):
    alias = create_alias("info@ours.example", ["alice@ours.example"])
    pk, domain = alice.pk, alice.domain_id
    urls = ["/manage/domains/", "/manage/domains/new/", f"/manage/domains/{domain}/",
            f"/manage/domains/{domain}/dns/", f"/manage/domains/{domain}/delete/",
            "/manage/mailboxes/", "/manage/mailboxes/new/", "/manage/mailboxes/import/",
            "/manage/mailboxes/export.csv", f"/manage/mailboxes/{pk}/",
            f"/manage/mailboxes/{pk}/password/", f"/manage/mailboxes/{pk}/delete/",
            "/manage/aliases/", "/manage/aliases/new/", f"/manage/aliases/{alias.pk}/",
            f"/manage/aliases/{alias.pk}/delete/", "/manage/admins/", "/manage/admins/new/",
            f"/manage/admins/{superadmin.pk}/", "/manage/audit/", "/manage/security/"]
    for url in urls:
        assert client.get(url)["Location"].startswith("/signin/"), url
    client.force_login(alice.user)
    for url in urls:
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"password": "x y z w 1234"}).status_code == 404, url
    assert Mailbox.objects.filter(pk=pk).exists()
