"""App passwords through the API: a mailbox user makes their own, an
administrator those of the mailboxes they manage; the password comes back
once and signs in as the mail programs do; the require options are fields of
the mailbox and the domain."""

from __future__ import annotations

import pytest

from apps.directory import services as directory
from apps.directory.models import AppPassword
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_user_makes_lists_and_revokes_their_own(as_alice, alice):
    made = as_alice.post("/api/v1/app-passwords/", {"name": "Phone"}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["mailbox"] == alice.address and body["name"] == "Phone"
    secret = body["password"]
    assert directory.authenticate(alice.address, secret, protocol="imap") == alice
    listed = as_alice.get("/api/v1/app-passwords/").json()["results"]
    assert [(item["name"], item["last_used_protocol"]) for item in listed] == [("Phone", "imap")]
    assert "password" not in listed[0]
    assert as_alice.get(f"/api/v1/app-passwords/{body['id']}/").json().get("password") is None
    assert as_alice.delete(f"/api/v1/app-passwords/{body['id']}/").status_code == 204
    assert directory.authenticate(alice.address, secret, protocol="imap") is None


def test_a_duplicate_or_empty_name_is_a_field_error(as_alice):
    assert as_alice.post("/api/v1/app-passwords/", {"name": "Phone"},
                         format="json").status_code == 201
    again = as_alice.post("/api/v1/app-passwords/", {"name": "Phone"}, format="json")
    assert again.status_code == 409 and "name" in again.content.decode()
    blank = as_alice.post("/api/v1/app-passwords/", {"name": " "}, format="json")
    assert blank.status_code == 400


def test_administrators_reach_the_mailboxes_they_manage_only(as_admin, as_alice, alice, zed):
    made = as_admin.post("/api/v1/app-passwords/", {"name": "Scanner", "mailbox": alice.address},
                         format="json")
    assert made.status_code == 201
    other = as_admin.post("/api/v1/app-passwords/", {"name": "X", "mailbox": zed.address},
                          format="json")
    assert other.status_code == 404
    theirs = AppPassword.objects.create(mailbox=zed, name="Zed's", digest="0" * 64)
    assert as_admin.get(f"/api/v1/app-passwords/{theirs.pk}/").status_code == 404
    assert as_alice.delete(f"/api/v1/app-passwords/{theirs.pk}/").status_code == 404
    assert AppPassword.objects.filter(pk=theirs.pk).exists()


def test_the_require_options_are_mailbox_and_domain_fields(as_alice, as_root, alice, ours):
    changed = as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", {"password_web_only": True},
                             format="json")
    assert changed.status_code == 200 and changed.json()["password_web_only"] is True
    assert directory.authenticate(alice.address, PASSWORD, protocol="imap") is None
    assert directory.authenticate(alice.address, PASSWORD, protocol="web") == alice
    as_alice.patch(f"/api/v1/mailboxes/{alice.pk}/", {"password_web_only": False}, format="json")
    assert directory.authenticate(alice.address, PASSWORD, protocol="pop3") == alice
    domain = as_root.patch(f"/api/v1/domains/{ours.pk}/", {"app_passwords_required": True},
                           format="json")
    assert domain.status_code == 200 and domain.json()["app_passwords_required"] is True
    assert directory.authenticate(alice.address, PASSWORD, protocol="submission") is None
