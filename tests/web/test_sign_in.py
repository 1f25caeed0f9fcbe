"""The one sign-in page: who lands where, the lockout, safe redirects, and the
security headers every page carries."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from apps.directory.models import Role, User
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_mailbox

ADMIN_PASSWORD = "admin password 1"


@pytest.fixture
def superadmin(db) -> User:
    return User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)


def post_sign_in(client: Client, email: str, password: str, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/signin/", {"email": email, "password": password, **extra})


def test_anonymous_visitor_is_sent_to_sign_in(client: Client, db) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/signin/"
    page = client.get("/signin/")
    assert b'<label for="id_email">Email</label>' in page.content
    assert b'<label for="id_password">Password</label>' in page.content
    assert b">Sign in</button>" in page.content


def test_administrator_lands_on_panel_and_user_on_webmail(client: Client, superadmin) -> None:
    assert post_sign_in(client, superadmin.email, ADMIN_PASSWORD)["Location"] == "/manage/"
    client.post("/signout/")
    mailbox = make_mailbox("carol@people.example")
    assert post_sign_in(client, mailbox.address, PASSWORD)["Location"] == "/mail/"
    # Each keeps out of the other's part: not found, as the API answers.
    assert client.get("/manage/").status_code == 404


def test_wrong_password_unknown_login_and_lockout_read_the_same(client: Client, settings,
                                                                db) -> None:
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    mailbox = make_mailbox("dave@people.example")
    wrong = post_sign_in(client, mailbox.address, "not it")
    unknown = post_sign_in(client, "nobody@people.example", "not it")
    assert wrong.status_code == unknown.status_code == 400
    assert b"The email or password is not right" in wrong.content
    assert wrong.content.count(b"is not right") == 1
    for _ in range(3):
        post_sign_in(client, mailbox.address, "still not it")
    locked = post_sign_in(client, mailbox.address, PASSWORD)  # the right one, but locked out
    assert locked.status_code == 400
    assert b"The email or password is not right" in locked.content
    assert "_auth_user_id" not in client.session


def test_next_is_followed_only_within_the_site(client: Client, superadmin) -> None:
    response = post_sign_in(client, superadmin.email, ADMIN_PASSWORD, next="/manage/?q=x")
    assert response["Location"] == "/manage/?q=x"
    client.post("/signout/")
    response = post_sign_in(client, superadmin.email, ADMIN_PASSWORD,
                            next="https://evil.example/")
    assert response["Location"] == "/manage/"


def test_sign_out_needs_post_and_ends_the_session(client: Client, superadmin) -> None:
    client.force_login(superadmin)
    assert client.get("/signout/").status_code == 405
    assert client.post("/signout/").status_code == 302
    assert client.get("/manage/")["Location"].startswith("/signin/")


def test_security_headers_and_cookies(client: Client, superadmin) -> None:
    response = client.get("/signin/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'self'" in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    signed_in = post_sign_in(client, superadmin.email, ADMIN_PASSWORD)
    cookie = signed_in.cookies["sessionid"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


def test_forms_refuse_a_post_without_csrf_token(superadmin) -> None:
    client = Client(enforce_csrf_checks=True)
    assert post_sign_in(client, superadmin.email, ADMIN_PASSWORD).status_code == 403


def test_domain_admin_is_an_administrator(client: Client, db) -> None:
    User.objects.create_user("da@people.example", ADMIN_PASSWORD, role=Role.DOMAIN_ADMIN)
    assert post_sign_in(client, "da@people.example", ADMIN_PASSWORD)["Location"] == "/manage/"


@pytest.mark.slow
def test_sign_in_and_out_in_a_browser(web_server, page: Page, superadmin) -> None:
    sign_in(page, web_server.url, superadmin.email, "not the password")
    expect(page.get_by_role("alert")).to_contain_text("The email or password is not right")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{web_server.url}/manage/")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{web_server.url}/signin/")


@pytest.mark.slow
def test_api_documentation_page_runs_under_the_content_security_policy(web_server,
                                                                       page: Page) -> None:
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{web_server.url}/api/docs/")
    # Swagger UI drew the schema it fetched: its scripts ran.
    expect(page.get_by_role("heading", name="Mailhost provisioning API")).to_be_visible(
        timeout=20_000)  # Swagger UI fetches and draws the whole schema first
    expect(page.get_by_text("/api/v1/domains/").first).to_be_visible()
    assert refused == []
