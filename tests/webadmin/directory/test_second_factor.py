"""Two-factor sign-in for administrators: set-up with a QR code and a first
code, recovery codes once, sign-in asks for the code, lockout, reset."""

from __future__ import annotations

import re
import time

import pyotp
from django.test import Client

from apps.directory import second_factor
from apps.directory.models import AuditEntry, SecondFactor
from tests.webadmin.directory.conftest import ADMIN_PASSWORD


def enrol(client: Client, user) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    page = client.post("/manage/security/", {"action": "begin"}).content.decode()
    assert 'src="data:image/svg+xml' in page  # the QR code
    secret = SecondFactor.objects.get(user=user).secret
    assert secret in page  # to type in by hand
    wrong = client.post("/manage/security/", {"action": "confirm", "code": "000000"})
    assert wrong.status_code == 400 and b"not right" in wrong.content
    done = client.post("/manage/security/", {"action": "confirm",
                                             "code": pyotp.TOTP(secret).now()})
    codes = re.findall(r'<li class="mono">([a-z0-9-]+)</li>', done.content.decode())
    assert len(codes) == 10
    return secret, codes


def sign_in(client: Client, email: str, password: str = ADMIN_PASSWORD):  # type: ignore[no-untyped-def]
    return client.post("/signin/", {"email": email, "password": password})


def test_enrolled_admin_is_asked_for_a_code_before_signing_in(client, superadmin):
    client.force_login(superadmin)
    secret, codes = enrol(client, superadmin)
    assert SecondFactor.objects.get(user=superadmin).recovery_codes[0] not in codes  # hashed
    assert b"shown this once" not in client.get("/manage/security/").content
    client.post("/signout/")
    first = sign_in(client, superadmin.email)
    assert first["Location"] == "/signin/code/"
    assert client.get("/manage/").status_code == 302  # not signed in yet
    page = client.get("/signin/code/").content.decode()
    assert '<label for="id_code">Code</label>' in page and ">Verify</button>" in page
    assert client.post("/signin/code/", {"code": "123456"}).status_code == 400
    code = pyotp.TOTP(secret).at(time.time() + 30)  # the next step: the first was used
    assert client.post("/signin/code/", {"code": code})["Location"] == "/manage/"
    assert client.get("/manage/").status_code == 200
    client.post("/signout/")
    sign_in(client, superadmin.email)
    assert client.post("/signin/code/", {"code": code}).status_code == 400  # replayed


def test_a_recovery_code_works_once(client, superadmin):
    client.force_login(superadmin)
    _, codes = enrol(client, superadmin)
    client.post("/signout/")
    sign_in(client, superadmin.email)
    assert client.post("/signin/code/", {"code": codes[0].upper()})["Location"] == "/manage/"
    client.post("/signout/")
    sign_in(client, superadmin.email)
    assert client.post("/signin/code/", {"code": codes[0]}).status_code == 400
    assert len(SecondFactor.objects.get(user=superadmin).recovery_codes) == 9
    used = AuditEntry.objects.get(action="2fa recovery code used")
    assert used.ip == "127.0.0.1" and used.changes == {"recovery codes left": 9}


def test_wrong_codes_count_toward_the_lockout(client, settings, superadmin):
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    client.force_login(superadmin)
    secret, _ = enrol(client, superadmin)
    client.post("/signout/")
    sign_in(client, superadmin.email)
    for _ in range(3):
        client.post("/signin/code/", {"code": "000000"})
    locked = client.post("/signin/code/", {"code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert locked.status_code == 400
    assert "_auth_user_id" not in client.session
    # The password step is locked too.
    assert sign_in(client, superadmin.email).status_code == 400


def test_disable_takes_a_code_and_a_superadmin_resets_anothers(client, superadmin,
                                                               domain_admin):
    client.force_login(domain_admin)
    secret, _ = enrol(client, domain_admin)
    refused = client.post("/manage/security/", {"action": "disable", "code": "999999"})
    assert refused.status_code == 400 and second_factor.is_enrolled(domain_admin)
    client.post("/manage/security/", {"action": "disable",
                                      "code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert not second_factor.is_enrolled(domain_admin)
    enrol(client, domain_admin)
    client.force_login(superadmin)
    assert b"Reset second factor" in client.get(f"/manage/admins/{domain_admin.pk}/").content
    client.post(f"/manage/admins/{domain_admin.pk}/second-factor/reset/")
    assert not second_factor.is_enrolled(domain_admin)
    assert client.post("/signout/") and sign_in(client, domain_admin.email)["Location"] == (
        "/manage/")
    actions = set(AuditEntry.objects.filter(object_repr=domain_admin.email)
                  .values_list("action", flat=True))
    assert {"2fa enrol", "2fa disable", "2fa reset"} <= actions


def test_the_code_step_needs_a_right_password_first(client, superadmin):
    assert client.get("/signin/code/")["Location"] == "/signin/"
    assert client.post("/signin/code/", {"code": "123456"})["Location"] == "/signin/"


def test_an_administrator_resets_a_users_lost_second_factor(root_client, alice) -> None:
    factor = second_factor.begin_enrolment(alice.user)
    second_factor.confirm_enrolment(alice.user, pyotp.TOTP(factor.secret).now())
    page = root_client.get(f"/manage/mailboxes/{alice.pk}/").content.decode()
    assert "Reset second factor" in page
    root_client.post(f"/manage/mailboxes/{alice.pk}/second-factor/reset/")
    assert not second_factor.is_enrolled(alice.user)
    assert AuditEntry.objects.filter(action="2fa reset", object_type="account",
                                     object_repr=alice.address).exists()
    assert "Reset second factor" not in root_client.get(
        f"/manage/mailboxes/{alice.pk}/").content.decode()
