"""Brute force without enumeration: a failure costs the same work whether the
login exists or not (the password hasher runs for an unknown login too), and
the lockout counts per login and per client IP across listener processes and
across protocols, answering a locked login exactly as a wrong password."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
from collections.abc import Iterator

import pytest
from django.contrib.auth import authenticate as web_authenticate
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client, RequestFactory

from apps.directory import services
from apps.directory.administrators import create_administrator
from apps.directory.models import Role
from apps.web.views import SIGN_IN_FAILED
from tests.conftest import ServerThread
from tests.factories import PASSWORD, make_mailbox


class CountingHasher(MD5PasswordHasher):
    """Counts every hash it computes, for making or for checking a password."""

    algorithm = "counting_md5"
    computed = 0

    def encode(self, password: str, salt: str) -> str:
        CountingHasher.computed += 1
        return super().encode(password, salt)


@pytest.fixture
def counting_hasher(settings) -> Iterator[type[CountingHasher]]:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    yield CountingHasher
    CountingHasher.computed = 0


def hashes(hasher: type[CountingHasher], attempt) -> int:  # type: ignore[no-untyped-def]
    before = hasher.computed
    assert not attempt()
    return hasher.computed - before


def test_every_failure_runs_the_hasher_once_whether_or_not_the_login_exists(
        db, counting_hasher: type[CountingHasher]) -> None:
    mailbox = make_mailbox("alice@ours.example")
    admin = create_administrator("boss@ours.example", "admin password 1", role=Role.DOMAIN_ADMIN)
    nopassword = make_mailbox("nopass@ours.example")
    nopassword.user.set_unusable_password()
    nopassword.user.save()
    request = RequestFactory().post("/signin/", REMOTE_ADDR="192.0.2.7")
    attempts = {
        "mailbox, wrong password": lambda: services.authenticate(mailbox.address, "wrong"),
        "mailbox, unknown login": lambda: services.authenticate("nobody@ours.example", "x"),
        "mailbox, login without a domain": lambda: services.authenticate("nobody", "x"),
        "mailbox, account without a password": lambda: services.authenticate(
            nopassword.address, "x"),
        # Web sign-in: administrators have no mailbox; an unknown login used to
        # cost no hash at all there.
        "web, administrator's wrong password": lambda: web_authenticate(
            request, username=admin.email, password="wrong"),
        "web, unknown login": lambda: web_authenticate(
            request, username="nobody@ours.example", password="x"),
        "web, mailbox's wrong password": lambda: web_authenticate(
            request, username=mailbox.address, password="wrong"),
    }
    counts = {what: hashes(counting_hasher, attempt) for what, attempt in attempts.items()}
    assert counts == dict.fromkeys(attempts, 1)


def imap_login(port: int, login: str, password: str) -> str:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login(login, password)
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        client.shutdown()
    return "OK"


def pop3_login(port: int, login: str, password: str) -> str:
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user(login)
        client.pass_(password)
    except poplib.error_proto as error:
        return str(error)
    finally:
        client.quit()
    return "OK"


def smtp_login(port: int, login: str, password: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo()
        plain = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        code, text = client.docmd("AUTH", f"PLAIN {plain}")
        return f"{code} {text.decode()}"


def web_login(login: str, password: str) -> str:
    answer = Client(REMOTE_ADDR="127.0.0.1").post(
        "/signin/", {"email": login, "password": password})
    if answer.status_code == 302:
        return "OK"
    return SIGN_IN_FAILED if SIGN_IN_FAILED in answer.content.decode() else "other"


def test_lockout_counts_across_processes_and_protocols_and_looks_like_a_wrong_password(
        listener_process, counting_hasher: type[CountingHasher], settings, monkeypatch,
) -> None:
    limits = {"MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN": 3, "MAILHOST_AUTH_MAX_FAILURES_PER_IP": 12}
    for name, value in limits.items():
        setattr(settings, name, value)
        monkeypatch.setenv(name, str(value))
    alice, bob, carol = (make_mailbox(f"{n}@ours.example").address
                         for n in ("alice", "bob", "carol"))
    # IMAP in a listener process of its own; POP3 and SMTP AUTH in this one.
    imap = listener_process(["imap"]).ports["imap"]
    here = ServerThread(["pop3", "submission"]).start()
    try:
        pop3, submission = here.port("pop3"), here.port("submission")
        assert pop3_login(pop3, carol, PASSWORD) == "OK"  # the control
        wrong = {"imap": imap_login(imap, bob, "wrong"), "pop3": pop3_login(pop3, bob, "wrong"),
                 "smtp": smtp_login(submission, bob, "wrong"), "web": web_login(bob, "wrong")}
        assert wrong["smtp"].startswith("535") and wrong["web"] == SIGN_IN_FAILED
        # An unknown login and a wrong password: the same answer, the same
        # hashing (counted here for the listeners of this process).
        before = counting_hasher.computed
        assert pop3_login(pop3, "nobody@ours.example", "wrong") == wrong["pop3"]
        assert smtp_login(submission, "nobody@ours.example", "wrong") == wrong["smtp"]
        assert imap_login(imap, "nobody@ours.example", "wrong") == wrong["imap"]
        assert counting_hasher.computed - before == 2
        # Per login: three failures on IMAP lock alice everywhere, and her
        # right password is answered as a wrong one.
        for _ in range(3):
            assert imap_login(imap, alice, "wrong") == wrong["imap"]
        assert imap_login(imap, alice, PASSWORD) == wrong["imap"]
        assert pop3_login(pop3, alice, PASSWORD) == wrong["pop3"]
        assert smtp_login(submission, alice, PASSWORD) == wrong["smtp"]
        assert web_login(alice, PASSWORD) == wrong["web"]
        # 3 + 3 + 3 = 9 failures from 127.0.0.1 so far (bob's fourth, on the
        # web, met bob's own lockout and counts no more): under the limit of
        # the IP, so carol, who never failed, still signs in.
        assert pop3_login(pop3, carol, PASSWORD) == "OK"
        # Per IP: three more failures under any login on IMAP, and carol is
        # refused on every protocol, as for a wrong password.
        for n in range(3):
            assert imap_login(imap, f"guess{n}@ours.example", "wrong") == wrong["imap"]
        assert pop3_login(pop3, carol, PASSWORD) == wrong["pop3"]
        assert smtp_login(submission, carol, PASSWORD) == wrong["smtp"]
        assert imap_login(imap, carol, PASSWORD) == wrong["imap"]
        assert web_login(carol, PASSWORD) == wrong["web"]
    finally:
        here.stop()
