"""The domain's two-factor policy on every webmail page costs no query of its
own: the signed-in user is loaded with their mailbox and its domain, and the
second factors are looked up only where the domain requires one."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.directory import services as directory
from apps.directory.models import SecurityKey
from tests.factories import make_domain, make_mailbox

pytestmark = pytest.mark.django_db

FACTOR_TABLES = ("directory_secondfactor", "directory_securitykey")


def page_queries(client: Client, path: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    return response.status_code, [query["sql"] for query in queries.captured_queries]


def test_no_policy_no_second_factor_query():
    mailbox = make_mailbox("ivy@relaxed.example")
    client = Client()
    client.force_login(mailbox.user)
    status, queries = page_queries(client, "/mail/settings/")
    assert status == 200
    assert not [sql for sql in queries if any(table in sql for table in FACTOR_TABLES)]
    # The user, their mailbox and its domain come in the one query.
    [user_query] = [sql for sql in queries if 'FROM "directory_user"' in sql]
    assert '"directory_mailbox"' in user_query and '"directory_domain"' in user_query


def test_a_required_policy_is_checked_on_every_page():
    domain = make_domain("strict-policy.example")
    mailbox = make_mailbox("jon@strict-policy.example")
    client = Client()
    client.force_login(mailbox.user)
    assert client.get("/mail/settings/").status_code == 200
    directory.update_domain(domain, second_factor_required=True)
    response = client.get("/mail/settings/")
    assert response.status_code == 302 and response["Location"] == "/mail/settings/two-step/"
    SecurityKey.objects.create(user=mailbox.user, name="Key", credential_id="AAAA",
                               public_key=b"\x00")
    assert client.get("/mail/settings/").status_code == 200
