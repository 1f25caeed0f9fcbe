"""App passwords over the real listeners: IMAP (imaplib), POP3 (poplib) and
SMTP submission (smtplib) sign in with them; a revoked one stops at once; a
mailbox (or its domain) that requires them refuses its own password there and
still signs in to the web with it."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.directory import app_passwords
from apps.directory import services as directory
from apps.directory.models import AppPassword
from mailhost.errors import Conflict, Invalid
from tests.factories import PASSWORD, make_domain, make_mailbox
from tests.logins import imap_login, pop3_login, smtp_login


def web_login(login: str, secret: str) -> bool:
    response = Client().post("/signin/", {"email": login, "password": secret})
    return response.status_code == 302


def test_app_passwords_sign_in_to_every_mail_protocol_until_revoked(mail_servers):
    mailbox = make_mailbox("alice@apps.example")
    phone, phone_secret = app_passwords.create(mailbox, "Phone")
    _, laptop_secret = app_passwords.create(mailbox, "Laptop")
    assert len(phone_secret.split("-")) == app_passwords.GROUPS
    for login in (imap_login, pop3_login, smtp_login):
        assert login(mail_servers, "alice@apps.example", phone_secret)
        # Typed without dashes, in capitals, it is the same password.
        assert login(mail_servers, "alice@apps.example", laptop_secret.replace("-", "").upper())
        assert login(mail_servers, "alice@apps.example", PASSWORD)  # not required here
    phone.refresh_from_db()
    assert phone.last_used is not None and phone.last_used_ip == "127.0.0.1"
    assert phone.last_used_protocol in ("imap", "pop3", "submission")
    # Another mailbox's login with this secret is no login at all.
    make_mailbox("bob@apps.example")
    assert not imap_login(mail_servers, "bob@apps.example", phone_secret)
    app_passwords.revoke(phone)
    for login in (imap_login, pop3_login, smtp_login):
        assert not login(mail_servers, "alice@apps.example", phone_secret)
        assert login(mail_servers, "alice@apps.example", laptop_secret)
    # The web never takes an app password.
    assert not web_login("alice@apps.example", laptop_secret)
    assert web_login("alice@apps.example", PASSWORD)


def test_a_mailbox_that_requires_app_passwords_keeps_its_password_for_the_web(mail_servers):
    mailbox = make_mailbox("carol@apps.example")
    _, secret = app_passwords.create(mailbox, "Thunderbird")
    directory.update_mailbox(mailbox, password_web_only=True)
    for login in (imap_login, pop3_login, smtp_login):
        assert not login(mail_servers, "carol@apps.example", PASSWORD)
        assert login(mail_servers, "carol@apps.example", secret)
    assert web_login("carol@apps.example", PASSWORD)


def test_a_domain_policy_requires_app_passwords_for_all_its_mailboxes(mail_servers):
    domain = make_domain("strict.example")
    make_mailbox("dave@strict.example")
    directory.update_domain(domain, app_passwords_required=True)
    assert not imap_login(mail_servers, "dave@strict.example", PASSWORD)
    assert not smtp_login(mail_servers, "dave@strict.example", PASSWORD)
    assert web_login("dave@strict.example", PASSWORD)


@pytest.mark.django_db
def test_names_are_required_and_unique_per_mailbox_and_only_digests_are_kept():
    mailbox = make_mailbox("erin@apps.example")
    with pytest.raises(Invalid):
        app_passwords.create(mailbox, "   ")
    made, secret = app_passwords.create(mailbox, "  My   phone ")
    assert made.name == "My phone"
    with pytest.raises(Conflict):
        app_passwords.create(mailbox, "My phone")
    stored = AppPassword.objects.get(pk=made.pk)
    assert secret not in stored.digest and secret.replace("-", "") not in stored.digest
    # A second mailbox may use the same name.
    app_passwords.create(make_mailbox("frank@apps.example"), "My phone")


@pytest.mark.django_db
def test_failures_with_app_passwords_count_towards_the_lockout(settings):
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    mailbox = make_mailbox("gina@apps.example")
    _, secret = app_passwords.create(mailbox, "Phone")
    for _ in range(3):
        assert directory.authenticate("gina@apps.example", "wrong-" + secret,
                                      protocol="imap") is None
    assert directory.authenticate("gina@apps.example", secret, protocol="imap") is None
