"""mailhost.compiled: a query compiled once answers as the ORM does, for each
call's own arguments, with the ORM's conversions, in one statement; an insert
compiled once stores what the ORM's bulk_create would."""

from __future__ import annotations

import pytest
from django.db.backends.utils import CursorWrapper

from apps.directory.models import Mailbox
from apps.store.models import Blob, TraceEvent
from mailhost.compiled import CompiledInsert, CompiledQuery
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


def test_compiled_insert_stores_what_bulk_create_would():
    insert = CompiledInsert(TraceEvent, return_pks=True)
    for round_, count in enumerate((1, 3, 1)):  # a statement per row count, used again
        events = [TraceEvent(kind="received", queue_id=f"q{round_}-{n}", addresses=" a@x ",
                             detail={"n": n, "to": ["a@x"]}) for n in range(count)]
        insert.insert(events)
        stored = {event.pk: event for event in TraceEvent.objects.filter(
            queue_id__startswith=f"q{round_}-")}
        assert sorted(stored) == sorted(event.pk for event in events)
        for event in events:  # each key is its own row's
            row = stored[event.pk]
            assert (row.queue_id, row.detail, row.time) == (
                event.queue_id, event.detail, event.time)
            assert not event._state.adding


def test_compiled_insert_ignores_conflicts_when_asked():
    insert = CompiledInsert(Blob, ignore_conflicts=True)
    insert.insert([Blob(sha256="a" * 64, size=1, envelope={}, bodystructure={})])
    insert.insert([Blob(sha256="a" * 64, size=2, envelope={}, bodystructure={}),
                   Blob(sha256="b" * 64, size=3, envelope={}, bodystructure={})])
    assert dict(Blob.objects.values_list("sha256", "size")) == {"a" * 64: 1, "b" * 64: 3}
