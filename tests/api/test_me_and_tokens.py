"""/api/v1/me/, /api/v1/tokens/ and `manage.py createapitoken`."""

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.api.models import ApiToken
from apps.api.services import create_token
from apps.directory import services
from tests.factories import PASSWORD


def test_me_for_each_role(as_root, as_admin, as_alice, alice):
    me = as_root.get("/api/v1/me/").json()
    assert me["role"] == "superadmin" and me["mailbox"] is None
    me = as_admin.get("/api/v1/me/").json()
    assert me["role"] == "domainadmin" and me["administered_domains"] == ["ours.example"]
    me = as_alice.get("/api/v1/me/").json()
    assert me["email"] == "alice@ours.example" and me["role"] == "user"
    assert me["mailbox"]["address"] == "alice@ours.example"
    assert me["mailbox"]["used_bytes"] == 0 and "password" not in me


def test_me_changes_display_name_and_password_but_not_role(as_alice, alice):
    response = as_alice.patch("/api/v1/me/", {
        "display_name": "Alice Liddell", "password": "through the looking glass",
        "role": "superadmin", "email": "root@ours.example"}, format="json")
    assert response.status_code == 200
    me = response.json()
    assert (me["display_name"], me["role"], me["email"]) == (
        "Alice Liddell", "user", "alice@ours.example")
    assert services.authenticate("alice@ours.example", PASSWORD) is None
    assert services.authenticate("alice@ours.example", "through the looking glass")


def test_me_weak_password_is_a_field_error(as_alice, alice):
    response = as_alice.patch("/api/v1/me/", {"password": "1234"}, format="json")
    assert response.status_code == 400 and "password" in response.json()
    assert services.authenticate("alice@ours.example", PASSWORD) is not None


def test_a_token_is_shown_once_and_stored_hashed(as_alice, alice):
    response = as_alice.post("/api/v1/tokens/", {"name": "laptop"}, format="json")
    assert response.status_code == 201
    key = response.json()["key"]
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert key not in (token.key_digest, token.prefix) and key.startswith(token.prefix)
    listed = as_alice.get("/api/v1/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"laptop", "test"}
    assert all("key" not in t for t in listed)
    assert as_alice.get(f"/api/v1/tokens/{token.pk}/").json()["account"] == "alice@ours.example"

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/me/").json()["email"] == "alice@ours.example"
    assert as_alice.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/me/").status_code == 401


def test_admins_create_and_revoke_tokens_for_accounts_they_manage(as_admin, as_root, alice, zed):
    response = as_admin.post("/api/v1/tokens/", {"account": "alice@ours.example"},
                             format="json")
    assert response.status_code == 201 and response.json()["account"] == "alice@ours.example"
    alice_token = response.json()["id"]
    response = as_admin.post("/api/v1/tokens/", {"account": "zed@theirs.example"},
                             format="json")
    assert response.status_code == 404 and "account" in response.json()
    assert not ApiToken.objects.filter(user=zed.user).exists()

    response = as_root.post("/api/v1/tokens/", {"account": "zed@theirs.example"}, format="json")
    zed_token = response.json()["id"]
    assert as_admin.delete(f"/api/v1/tokens/{zed_token}/").status_code == 404
    assert as_admin.delete(f"/api/v1/tokens/{alice_token}/").status_code == 204
    assert ApiToken.objects.filter(pk=zed_token).exists()


def test_mailbox_user_cannot_make_tokens_for_others(as_alice, alice, zed):
    response = as_alice.post("/api/v1/tokens/", {"account": "zed@theirs.example"}, format="json")
    assert response.status_code == 404
    zed_token, _ = create_token(zed.user)
    assert as_alice.delete(f"/api/v1/tokens/{zed_token.pk}/").status_code == 404
    assert ApiToken.objects.filter(user=zed.user).count() == 1


def test_tokens_of_a_disabled_mailbox_stop_working(as_alice, alice):
    assert as_alice.get("/api/v1/me/").status_code == 200
    services.update_mailbox(alice, active=False)
    assert as_alice.get("/api/v1/me/").status_code == 401


def test_createapitoken_prints_the_key_on_its_last_line(alice):
    out = io.StringIO()
    call_command("createapitoken", "Alice@ours.example", "--name", "script", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/me/").json()["email"] == "alice@ours.example"
    assert ApiToken.objects.get(user=alice.user).name == "script"
    with pytest.raises(CommandError):
        call_command("createapitoken", "nobody@ours.example", stdout=io.StringIO())


def test_session_login_works_for_the_browsable_pages(client, alice):
    assert client.login(username="alice@ours.example", password=PASSWORD)
    assert client.get("/api/v1/me/").json()["email"] == "alice@ours.example"
