"""Tenant isolation in the REST API: every path × method of the OpenAPI schema,
with tenant B's ids, names and addresses, as tenant A's domain administrator
and as A's mailbox user. The list of endpoints comes from the schema, so an
endpoint added later is tried without touching this file."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.api.services import create_token
from apps.directory.models import User
from tests.isolation.conftest import Tenant, leaked, snapshot

# What an {id} in a path names, by the collection it follows.
ID_KINDS = {"domains": "domain", "mailboxes": "mailbox", "aliases": "alias",
            "tokens": "token", "admins": "admin", "app-passwords": "app_password"}
GHOST_ID = 987654321
GHOST_DOMAIN = "nowhere.example"


def schema(client: APIClient) -> dict[str, Any]:
    answer = client.get("/api/schema/")
    assert answer.status_code == 200
    return yaml.safe_load(answer.content)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, methods in spec["paths"].items()
            for method, operation in methods.items()
            if method in ("get", "post", "put", "patch", "delete")]


def id_kind(path: str) -> str:
    collection = path.removeprefix("/api/v1/").split("/")[0]
    assert collection in ID_KINDS, (
        f"{path}: say in ID_KINDS which of a tenant's objects its {{id}} names")
    return ID_KINDS[collection]


def example(spec: dict[str, Any], node: dict[str, Any], name: str, values: dict[str, Any]
            ) -> Any:
    """A value for a request field, taken from ``values`` (one tenant's names)
    by the field's name, else made up from its type."""
    if "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rpartition("/")[2]]
    if "allOf" in node:
        return example(spec, node["allOf"][0], name, values)
    if name in values:
        return values[name]
    if node.get("type") == "object" or "properties" in node:
        return {key: example(spec, sub, key, values)
                for key, sub in node.get("properties", {}).items()
                if not sub.get("readOnly")}
    if "enum" in node:
        return node["enum"][-1]
    kind = node.get("type")
    if kind == "array":
        return [example(spec, node.get("items", {}), name, values)]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return 1
    if node.get("format") == "email":
        return values["email"]
    return values["name"]


def values_of(domain: str, mailbox: str) -> dict[str, Any]:
    """Request field values that point into ``domain``: an existing mailbox
    where the field names an account, new addresses where it creates one."""
    return {"name": domain, "domain": domain, "domains": [domain],
            "address": f"intruder@{domain}", "email": f"intruder@{domain}",
            "destinations": [mailbox], "user": {"email": mailbox},
            "password": "a long new password 42", "search": domain}


def request(client: APIClient, spec: dict[str, Any], path: str, method: str,
            operation: dict[str, Any], ident: int | str, values: dict[str, Any]
            ) -> tuple[int, str, str]:
    """Send one operation; returns status, answer text and what was sent."""
    url = path.replace("{id}", str(ident))
    query = {p["name"]: values[p["name"]] for p in operation.get("parameters", [])
             if p["in"] == "query" and p["name"] in values}
    body = None
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = example(spec, content["application/json"]["schema"], "", values)
    call = getattr(client, method)
    if method == "get":
        answer = call(url, query)
    else:
        answer = call(url + ("?" + "&".join(f"{k}={v}" for k, v in query.items())
                             if query else ""), body, format="json")
    sent = url + json.dumps(query) + json.dumps(body)
    return answer.status_code, answer.content.decode(errors="replace"), sent


def client_of(user: User) -> APIClient:
    _, key = create_token(user, name="isolation test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.parametrize("who", ["domain admin", "mailbox user"])
def test_no_api_endpoint_reaches_the_other_tenant(tenant_a: Tenant, tenant_b: Tenant,
                                                  who: str) -> None:
    user = tenant_a.admin if who == "domain admin" else tenant_a.mailbox.user
    client = client_of(user)
    spec = schema(client)
    theirs = values_of(tenant_b.domain.name, tenant_b.mailbox.address)
    ghost = values_of(GHOST_DOMAIN, f"nobody@{GHOST_DOMAIN}")
    before = snapshot(tenant_b)
    tried = 0
    for path, method, operation in operations(spec):
        has_id = "{id}" in path
        ident = tenant_b.ids()[id_kind(path)] if has_id else ""
        status, text, sent = request(client, spec, path, method, operation, ident, theirs)
        where = f"{method.upper()} {path} as A's {who}"
        assert not leaked(tenant_b, text, sent), f"{where} showed B's data: {text[:300]}"
        assert snapshot(tenant_b) == before, f"{where} changed B's rows"
        if has_id:
            assert status in (403, 404), f"{where} answered {status}: {text[:300]}"
        # B's id or name is answered as one that does not exist at all (404,
        # or the same answer as for no one's): the answer confirms nothing.
        if status != 404:
            ghost_status, _, _ = request(client, spec, path, method, operation,
                                         GHOST_ID if has_id else "", ghost)
            assert status == ghost_status, (
                f"{where}: {status} for B, {ghost_status} for no one")
        tried += 1
    assert tried == len(operations(spec)) >= 20


def test_superadmin_sees_the_other_tenant(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The positive control: the same requests as a superadmin do find B's
    objects, so the checks above can fail."""
    root = User.objects.create_superuser("root@admin.example", "root password 1")
    client = client_of(root)
    spec = schema(client)
    found = 0
    for path, method, operation in operations(spec):
        if method != "get" or "{id}" not in path:
            continue
        status, text, _ = request(client, spec, path, method, operation,
                                     tenant_b.ids()[id_kind(path)], {})
        assert status == 200, f"GET {path}: {status}"
        found += bool(leaked(tenant_b, text, ""))
    assert found == sum(1 for path, method, _ in operations(spec)
                        if method == "get" and "{id}" in path)


def _api_routes(patterns: list, prefix: str = "") -> set[str]:
    routes: set[str] = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes |= _api_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            routes.add(route)
    return routes


def test_every_api_url_is_in_the_schema_that_the_enumeration_reads(tenant_a: Tenant) -> None:
    """An API URL added later is covered only if the schema lists it: every
    route under /api/v1/ that Django resolves is one of the schema's paths."""
    spec = schema(client_of(tenant_a.admin))
    in_schema = {re.sub(r"\{\w+\}", "{}", path) for path in spec["paths"]}
    resolved = set()
    for route in _api_routes(get_resolver().url_patterns):
        if not route.startswith("api/v1/") or "format" in route:
            continue
        # Router regexes (^api/v1/domains/(?P<pk>[^/.]+)/$) to the schema's form.
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", route).replace("^", "").replace("$", "")
        path = re.sub(r"<\w+:\w+>|<\w+>", "{}", path)
        if path.endswith(r"\.") or path in ("api/v1/", ):
            continue
        resolved.add("/" + path)
    assert resolved, "no API route found"
    assert resolved <= in_schema, f"API routes missing from the schema: {resolved - in_schema}"
    for path in spec["paths"]:
        if "{id}" in path:
            id_kind(path)
