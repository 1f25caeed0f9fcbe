"""Tenant isolation in the admin panel and the webmail: every URL that Django
resolves under /manage/ and /mail/, with tenant B's ids in the path and B's
ids and names in the query and the form fields, as tenant A's domain
administrator, as A's mailbox user and signed out. A URL added later is tried
without touching this file (a new kind of path parameter fails loudly until
it is named in PARAMETERS)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from playwright.sync_api import Page, expect

from apps.directory.models import User
from apps.webmail.actions import ACTIONS
from tests.conftest import sign_in
from tests.factories import PASSWORD
from tests.isolation.conftest import (
    ADMIN_PASSWORD,
    B_BODY,
    B_FOLDER,
    B_SUBJECT,
    Tenant,
    leaked,
    snapshot,
)

NAMESPACES = ("webadmin", "webmail")
GHOST_ID = 987654321
# Which of a tenant's objects a path parameter names: by parameter, or for a
# bare ``pk`` by the collection it follows (domains/<pk>/ …).
PARAMETERS = {"folder_id": "folder", "message_id": "message", "queue_id": "queue",
              "job_pk": "import_job"}
PK_KINDS = {"domains": "domain", "mailboxes": "mailbox", "aliases": "alias", "admins": "admin"}
# Path parameters that are not ids: the values they take.
FIXED = {"section": ["1"], "action": ["retry", "bounce", "delete"]}


def urls() -> Iterator[tuple[str, URLPattern]]:
    for top in get_resolver().url_patterns:
        if isinstance(top, URLResolver) and top.namespace in NAMESPACES:
            for pattern in top.url_patterns:
                assert isinstance(pattern, URLPattern), f"nested {pattern}: walk it too"
                yield f"{top.namespace}:{pattern.name}", pattern


def kind_of(name: str, parameter: str, parameters: Iterable[str] = ()) -> str | None:
    """What ``parameter`` of URL ``name`` (whose parameters are ``parameters``) names."""
    if parameter in PARAMETERS:
        return PARAMETERS[parameter]
    if parameter in FIXED:
        return None
    route = reverse(name, kwargs=dict.fromkeys({*parameters, parameter}, 1))
    collection = route.strip("/").split("/")[1]
    assert parameter == "pk" and collection in PK_KINDS, (
        f"{name}: say which of a tenant's objects <{parameter}> names")
    return PK_KINDS[collection]


def addresses(name: str, pattern: URLPattern, ids: dict[str, Any]) -> list[str]:
    """The URLs of one pattern with ``ids`` (one tenant's, or ghosts)."""
    parameters = list(pattern.pattern.regex.groupindex)
    kwargs_list: list[dict[str, Any]] = [{}]
    for parameter in parameters:
        kind = kind_of(name, parameter, parameters)
        choices = FIXED[parameter] if kind is None else [ids[kind]]
        kwargs_list = [{**kw, parameter: value} for kw in kwargs_list for value in choices]
    return [reverse(name, kwargs=kw) for kw in kwargs_list]


def find_fields(b: Tenant, ids: dict[str, Any]) -> dict[str, Any]:
    """Query fields that look things up: filters, search, a folder to list."""
    return {"address": b.domain.name, "object": b.domain.name, "actor": b.domain.name,
            "queue_id": ids["queue"], "q": "merger", "in": ids["folder"],
            "current": ids["folder"], "reply": ids["message"], "forward": ids["message"],
            "draft": ids["message"], "domain": ids["domain"]}


def change_fields(b: Tenant, ids: dict[str, Any], action: str) -> dict[str, Any]:
    """Form fields that change things, naming B's objects."""
    return {"action": action, "operation": action, "ids": [ids["message"]],
            "target": ids["folder"], "folder": ids["folder"], "parent": ids["folder"],
            "attachments_from": ids["message"], "name": f"stolen.{b.domain.name}",
            "address": f"intruder@{b.domain.name}", "email": f"intruder@{b.domain.name}",
            "password": "a long new password 42", "destinations": b.mailbox.address,
            "forward_to": b.mailbox.address, "domains": [ids["domain"]],
            "role": "domainadmin", "display_name": "Intruder", "active": "on",
            "to": b.mailbox.address, "subject": "hello", "body": "hello",
            "csv": f"intruder@{b.domain.name},a long new password 42\n"}


def answer(client: Client, method: str, url: str, data: dict[str, Any]) -> tuple[int, str]:
    response = getattr(client, method)(url, data)
    if getattr(response, "streaming", False):
        # The live event stream never ends: its status is enough. Closing it
        # must not close the test's database connection (the test client
        # unhooks the same signal around each request).
        request_finished.disconnect(close_old_connections)
        try:
            response.close()
        finally:
            request_finished.connect(close_old_connections)
        return response.status_code, ""
    text = response.content.decode(errors="replace")
    if response.status_code in (301, 302, 303):
        text += " -> " + response["Location"]
    return response.status_code, text


def signed_in(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("who", ["domain admin", "mailbox user", "signed out"])
def test_no_page_reaches_the_other_tenant(tenant_a: Tenant, tenant_b: Tenant, who: str) -> None:
    user = {"domain admin": tenant_a.admin, "mailbox user": tenant_a.mailbox.user,
            "signed out": None}[who]
    client = signed_in(user)
    theirs = tenant_b.ids()
    ghosts = {kind: GHOST_ID if isinstance(value, int) else "NOSUCHQUEUEID"
              for kind, value in theirs.items()}
    before = snapshot(tenant_b)
    tried = 0
    for name, pattern in urls():
        has_id = bool(pattern.pattern.regex.groupindex.keys() - FIXED.keys())
        # A mailbox user's forms without an id in the path (act/, folders/…)
        # name B's objects in their fields: try every action there.
        actions = ["delete"]
        if who == "mailbox user" and not has_id and name.startswith("webmail:"):
            actions += sorted(ACTIONS | {"rename", "create"} - {"delete"})
        for url, ghost_url in zip(addresses(name, pattern, theirs),
                                  addresses(name, pattern, ghosts), strict=True):
            requests = [("get", find_fields(tenant_b, theirs), find_fields(tenant_b, ghosts))]
            requests += [("post", change_fields(tenant_b, theirs, action),
                          change_fields(tenant_b, ghosts, action)) for action in actions]
            post_status = 0
            for method, data, ghost_data in requests:
                where = f"{method.upper()} {url} ({name}) as A's {who}"
                if method == "post" and data["action"] != "delete" and post_status == 405:
                    break  # a view that takes no POST takes none whatever the action
                status, text = answer(client, method, url, data)
                post_status = status
                assert not leaked(tenant_b, text, url + repr(data)), f"{where} showed B's data"
                if user is None:
                    assert status in (404, 405) or (status == 302 and "/signin/?next=" in text), (
                        f"{where}: {status}")
                elif has_id:
                    assert status in (404, 405), f"{where} answered {status}"
                # Not found is what no one's id gets; any other answer must be
                # the same as for no one's.
                if status != 404 and data.get("action", "delete") == "delete":
                    ghost_status, _ = answer(client, method, ghost_url, ghost_data)
                    assert status == ghost_status, (
                        f"{where}: {status} for B, {ghost_status} for no one")
                tried += 1
            assert snapshot(tenant_b) == before, f"{url} ({name}) as A's {who} changed B's rows"
    assert tried > 40


def test_their_own_people_do_see_it(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The positive control: B's own administrator and mailbox user, and a
    superadmin, are shown B's objects at the same URLs."""
    root = User.objects.create_superuser("root@admin.example", "root password 1")
    ids = tenant_b.ids()
    for user in (tenant_b.admin, root):
        client = signed_in(user)
        for name in ("webadmin:mailbox_edit", "webadmin:alias_edit", "webadmin:domain_detail"):
            kind = kind_of(name, "pk")
            status, text = answer(client, "get", reverse(name, kwargs={"pk": ids[kind]}), {})
            assert status == 200 and leaked(tenant_b, text, ""), name
        status, text = answer(client, "get", reverse("webadmin:queue"), {})
        assert tenant_b.queued.queue_id in text
    client = signed_in(tenant_b.mailbox.user)
    status, text = answer(client, "get", reverse("webmail:message",
                                                 kwargs={"message_id": ids["message"]}), {})
    assert status == 200 and B_SUBJECT in text and B_BODY in text
    status, text = answer(client, "get", reverse("webmail:search"), {"q": "merger"})
    assert B_SUBJECT in text


def test_in_a_browser_the_other_tenants_message_is_not_found(
        tenant_a: Tenant, tenant_b: Tenant, web_server, page: Page) -> None:
    sign_in(page, web_server.url, tenant_a.mailbox.address, PASSWORD)
    expect(page).to_have_url(f"{web_server.url}/mail/")
    for path in (f"/mail/message/{tenant_b.messages[0].pk}/",
                 f"/mail/folder/{tenant_b.folder.pk}/",
                 "/mail/search/?q=merger"):
        response = page.goto(web_server.url + path)
        assert response is not None
        body = page.content()
        assert B_SUBJECT not in body and B_FOLDER not in body and B_BODY not in body
        if "search" not in path:
            assert response.status == 404
    # A's administrator is not shown B's mailbox either, and sees A's own.
    page.context.clear_cookies()
    sign_in(page, web_server.url, tenant_a.admin.email, ADMIN_PASSWORD)
    response = page.goto(f"{web_server.url}/manage/mailboxes/{tenant_b.mailbox.pk}/")
    assert response is not None and response.status == 404
    page.goto(f"{web_server.url}/manage/mailboxes/")
    expect(page.get_by_text(tenant_a.mailbox.address)).to_be_visible()
    assert tenant_b.mailbox.address not in page.content()
    assert not re.search(r"theirs\.example", page.content())
