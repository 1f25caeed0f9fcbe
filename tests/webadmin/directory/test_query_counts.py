"""Every directory list page runs the same number of queries whatever its
length and page size."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.directory.administrators import create_administrator
from apps.directory.audit import Actor
from apps.directory.models import Domain, Role, User
from apps.directory.services import create_alias, update_mailbox
from apps.store import services as store
from tests.factories import make_domain, make_mailbox

PAGES = ["/manage/domains/", "/manage/mailboxes/", "/manage/mailboxes/?usage=high&q=u",
         "/manage/aliases/", "/manage/admins/", "/manage/audit/"]


def add_rows(count: int, superadmin) -> None:  # type: ignore[no-untyped-def]
    for _ in range(count):
        domain = make_domain()
        mailbox = make_mailbox(f"u@{domain.name}", quota=1000)
        store.deliver([mailbox], b"Subject: x\r\n\r\n" + b"x" * 95)
        update_mailbox(mailbox, quota=110, actor=Actor(superadmin))
        create_alias(f"a@{domain.name}", [mailbox.address])
        create_administrator(f"admin@{domain.name}", "admin password 9", role=Role.DOMAIN_ADMIN,
                             domains=[domain])


def queries(client, url: str) -> int:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return len(context)


@pytest.mark.parametrize("url", PAGES)
def test_list_pages_run_a_constant_number_of_queries(root_client, superadmin, url):
    add_rows(2, superadmin)
    few = queries(root_client, url)
    few_small_pages = queries(root_client, url + ("&" if "?" in url else "?") + "size=25")
    add_rows(30, superadmin)
    many = queries(root_client, url)
    many_big_pages = queries(root_client, url + ("&" if "?" in url else "?") + "size=200")
    assert few == few_small_pages == many == many_big_pages, (few, many)
    assert many <= 8


def test_domain_admin_list_pages_too(client, superadmin):
    add_rows(2, superadmin)
    boss = User.objects.filter(role=Role.DOMAIN_ADMIN).first()
    boss.administered_domains.set(Domain.objects.all())
    client.force_login(boss)
    counts = [queries(client, url) for url in PAGES if "admins" not in url]
    add_rows(20, superadmin)
    boss.administered_domains.set(Domain.objects.all())
    assert counts == [queries(client, url) for url in PAGES if "admins" not in url]
