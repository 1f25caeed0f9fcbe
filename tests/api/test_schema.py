"""The OpenAPI schema, its documentation page, and schemathesis against a live server."""

import subprocess
import sys

import pytest
import yaml
from django.core.management import call_command

from apps.api.services import create_token
from tests.factories import make_mailbox


def test_schema_is_openapi_3_and_lists_every_endpoint(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/domains/", "/api/v1/domains/{id}/", "/api/v1/domains/{id}/dns_records/",
            "/api/v1/mailboxes/", "/api/v1/mailboxes/{id}/", "/api/v1/aliases/",
            "/api/v1/aliases/{id}/", "/api/v1/me/", "/api/v1/tokens/",
            "/api/v1/tokens/{id}/", "/api/v1/admins/",
            "/api/v1/admins/{id}/"} <= set(schema["paths"])
    mailbox = schema["components"]["schemas"]["MailboxRequest"]
    assert {"address", "password"} <= set(mailbox["required"])
    assert schema["components"]["schemas"]["Mailbox"]["properties"].get("password") is None
    assert schema["components"]["securitySchemes"]["tokenAuth"]["in"] == "header"


def test_schema_generates_without_warnings_and_validates(tmp_path):
    # drf-spectacular raises on any warning (an untyped field, a guessed path
    # parameter) and validates the result against the OpenAPI 3 meta-schema.
    call_command("spectacular", "--validate", "--fail-on-warn",
                 "--file", str(tmp_path / "schema.yaml"))
    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["info"]["version"] == "1"


def test_docs_page_is_served_from_our_own_static_files(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    # No inline script: the start-up script is a file of its own, naming the schema.
    assert "<script>" not in html
    start_up = client.get("/api/docs/?script=")
    assert start_up["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in start_up.content.decode()
    assert "//cdn" not in html and "https://" not in html.replace("https://swagger.io", "")
    script = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    assert script in html
    asset = client.get(script)
    assert asset.status_code == 200


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(live_server, superadmin, tmp_path):
    make_mailbox("alice@ours.example")
    _, key = create_token(superadmin, name="schemathesis")
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{live_server.url}/api/schema/",
         "--header", f"Authorization: Token {key}",
         "--checks", "not_a_server_error",
         "--max-examples", "10", "--workers", "1", "--seed", "1", "--no-shrink",
         "--max-time", "45", "--request-timeout", "20",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=170, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
