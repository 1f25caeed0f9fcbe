"""List endpoints answer in the same number of queries whatever the page size."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.api.services import create_token
from apps.directory import services
from apps.store import services as store
from tests.factories import make_mailbox

LISTS = ["/api/v1/domains/", "/api/v1/mailboxes/", "/api/v1/aliases/", "/api/v1/tokens/"]


@pytest.fixture
def many(ours, theirs, domain_admin, superadmin):
    for domain in ("ours.example", "theirs.example"):
        for n in range(12):
            mailbox = make_mailbox(f"user{n}@{domain}")
            store.deliver([mailbox], b"Subject: x\r\n\r\n" + b"z" * n)
            services.create_alias(f"alias{n}@{domain}", [mailbox.address])
            create_token(mailbox.user)
            create_token(superadmin)
    domain_admin.administered_domains.add(theirs)
    for n in range(20):
        domain_admin.administered_domains.add(services.create_domain(f"extra{n}.example"))


def queries(client, url: str) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), len(response.json()["results"])


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize("role", ["as_root", "as_admin"])
def test_list_queries_do_not_grow_with_the_page(request, many, url, role):
    client = request.getfixturevalue(role)
    small, small_rows = queries(client, f"{url}?page_size=2")
    large, large_rows = queries(client, f"{url}?page_size=20&ordering=-created")
    assert (small_rows, large_rows) == (2, 20)
    # token lookup, COUNT(*), the page itself
    assert small == large == 3


def test_mailbox_user_list_is_constant_too(many, client_for):
    from apps.directory.models import Mailbox

    client = client_for(Mailbox.objects.get(address="user3@ours.example").user)
    assert queries(client, "/api/v1/mailboxes/") == (3, 1)


def test_me_is_constant(many, as_admin, django_assert_num_queries):
    # token, account with its domains (2), its mailbox
    with django_assert_num_queries(4):
        assert len(as_admin.get("/api/v1/me/").json()["administered_domains"]) == 22
