"""/api/v1/admins/: superadmins manage administrators; others are refused."""

from __future__ import annotations

from apps.directory.models import AuditEntry, Role, User


def test_superadmin_creates_lists_changes_and_removes(client_for, superadmin, ours, theirs):
    client = client_for(superadmin)
    created = client.post("/api/v1/admins/", {
        "email": "helper@ours.example", "password": "admin password 3",
        "domains": ["ours.example"]}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["role"] == "domainadmin" and body["domains"] == ["ours.example"]
    assert "password" not in body and body["two_factor"] is False
    listed = client.get("/api/v1/admins/?search=helper").json()["results"]
    assert [a["email"] for a in listed] == ["helper@ours.example"]
    changed = client.patch(f"/api/v1/admins/{body['id']}/", {
        "domains": ["ours.example", "theirs.example"]}, format="json")
    assert changed.json()["domains"] == ["ours.example", "theirs.example"]
    assert client.delete(f"/api/v1/admins/{body['id']}/").status_code == 204
    assert not User.objects.filter(email="helper@ours.example").exists()
    assert list(AuditEntry.objects.filter(object_repr="helper@ours.example")
                .order_by("pk").values_list("action", flat=True)) == [
        "create", "update", "delete"]


def test_field_errors(client_for, superadmin, domain_admin):
    client = client_for(superadmin)
    unknown = client.post("/api/v1/admins/", {"email": "x@ours.example", "password":
                                              "admin password 3", "domains": ["nope.example"]},
                          format="json")
    assert unknown.status_code == 400 and "domains" in unknown.json()
    nul = client.post("/api/v1/admins/", {"email": "x@ours.example", "password":
                                          "admin password 3", "domains": ["a\x00b"]},
                      format="json")
    assert nul.status_code == 400 and "domains" in nul.json()
    weak = client.post("/api/v1/admins/", {"email": "x@ours.example", "password": "short"},
                       format="json")
    assert weak.status_code == 400 and "password" in weak.json()
    taken = client.post("/api/v1/admins/", {"email": domain_admin.email,
                                            "password": "admin password 3"}, format="json")
    assert taken.status_code == 409 and "email" in taken.json()
    last = client.patch(f"/api/v1/admins/{superadmin.pk}/", {"role": "domainadmin"},
                        format="json")
    assert last.status_code == 409
    assert client.delete(f"/api/v1/admins/{superadmin.pk}/").status_code == 409


def test_domain_admins_and_users_are_refused(client_for, domain_admin, alice):
    for user in (domain_admin, alice.user):
        client = client_for(user)
        assert client.get("/api/v1/admins/").status_code == 403
        assert client.post("/api/v1/admins/", {"email": "x@ours.example",
                                               "password": "admin password 3"},
                           format="json").status_code == 403
        assert client.delete(f"/api/v1/admins/{domain_admin.pk}/").status_code == 403
    assert User.objects.filter(role=Role.DOMAIN_ADMIN).count() == 1


def test_mailbox_users_are_not_listed(client_for, superadmin, domain_admin, alice):
    emails = {a["email"] for a in client_for(superadmin).get("/api/v1/admins/").json()["results"]}
    assert emails == {superadmin.email, domain_admin.email}
