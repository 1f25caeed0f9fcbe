"""Changes made through the API land in the audit log, written by the
directory services: who, from where, what changed; never a password."""

from __future__ import annotations

from apps.directory.models import AuditEntry


def test_api_changes_are_recorded_with_actor_ip_and_changes(client_for, superadmin, alice):
    client = client_for(superadmin)
    response = client.patch(f"/api/v1/mailboxes/{alice.pk}/",
                            {"quota": 1000, "password": "a new password 9"}, format="json",
                            REMOTE_ADDR="192.0.2.7")
    assert response.status_code == 200
    entry = AuditEntry.objects.get(object_repr="alice@ours.example", action="update")
    assert entry.actor_email == "root@admin.example"
    assert entry.ip == "192.0.2.7"
    assert entry.domain_name == "ours.example"
    assert entry.changes["quota"][1] == 1000
    assert entry.changes["password"] == "changed"
    assert "a new password 9" not in str(entry.changes)
    assert alice.user.password not in str(entry.changes)


def test_create_and_delete_through_the_api_are_recorded(client_for, superadmin, ours):
    client = client_for(superadmin)
    created = client.post("/api/v1/aliases/", {"address": "info@ours.example",
                                               "destinations": ["x@elsewhere.example"]},
                          format="json")
    client.delete(f"/api/v1/aliases/{created.json()['id']}/")
    actions = list(AuditEntry.objects.filter(object_repr="info@ours.example")
                   .order_by("pk").values_list("action", "actor_email"))
    assert actions == [("create", "root@admin.example"), ("delete", "root@admin.example")]


def test_an_unchanged_save_records_nothing(client_for, superadmin, alice):
    client_for(superadmin).patch(f"/api/v1/mailboxes/{alice.pk}/", {"quota": alice.quota},
                                 format="json")
    assert not AuditEntry.objects.filter(action="update").exists()
