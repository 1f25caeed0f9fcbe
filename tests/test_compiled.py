"""mailhost.compiled: a query compiled once answers as the ORM does, for each
call's own arguments, with the ORM's conversions, in one statement."""

from __future__ import annotations

import pytest
from django.db.backends.utils import CursorWrapper

from apps.directory.models import Mailbox
from mailhost.compiled import CompiledQuery
from tests.factories import make_mailbox

pytestmark = pytest.mark.django_db


def _by_address(address: str, quota: int):  # type: ignore[no-untyped-def]
    return (Mailbox.objects.filter(address=address, quota__gte=quota).order_by("pk")
            .values_list("pk", "address", "created", "active"))


def test_compiled_query_answers_as_the_orm_for_each_call(monkeypatch):
    first = make_mailbox("alice@example.test")
    second = make_mailbox("bob@example.test")
    query = CompiledQuery(_by_address, str, int)
    for mailbox in (first, second, first):
        expected = list(_by_address(mailbox.address, 0))
        assert query.rows(mailbox.address, 0) == expected
        assert query.first(mailbox.address, 0) == expected[0]
    # Converted as the ORM converts: an aware datetime, a bool.
    assert query.first(first.address, 0)[2] == first.created
    assert query.first(first.address, 0)[3] is True
    assert query.rows("nobody@example.test", 0) == []
    assert query.first(first.address, 10**15) is None
    statements: list[str] = []
    original = CursorWrapper.execute

    def counting(self, sql, params=None):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    query.rows(second.address, 0)
    assert len(statements) == 1


def test_list_arguments_of_any_length():
    mailboxes = [make_mailbox(f"user{n}@example.test") for n in range(6)]
    query = CompiledQuery(
        lambda ids, addresses: Mailbox.objects.filter(pk__in=ids, address__in=addresses)
        .order_by("pk").values_list("address"), [int], [str])
    everyone = [m.address for m in mailboxes]
    for count in (1, 2, 3, 5, 6):
        chosen = mailboxes[:count]
        assert query.rows([m.pk for m in chosen], everyone) == [(m.address,) for m in chosen]
    assert query.rows([m.pk for m in mailboxes], everyone[4:]) == [
        (address,) for address in everyone[4:]]
    assert query.rows([], everyone) == []
