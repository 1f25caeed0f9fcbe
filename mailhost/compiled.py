"""Hot reads of the store, and hot inserts, their SQL compiled once.

Building a query through the ORM (cloning the queryset, resolving lookups,
compiling) costs about 0.2 ms of CPU, ten times what SQLite takes to answer a
read by primary key. An IMAP session makes tens of the same small reads (each
view refresh is three), all in the one listener process, whose CPU is then
its ceiling. So these queries are still written with the ORM, compiled once
with stand-in arguments, and then run with the real ones through a cursor;
the ORM's converters still turn the columns into Python values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet
from django.db.models.constants import OnConflict

# Compiled forms of one query kept (one per width of its list arguments).
_WIDTHS_KEPT = 16


def _stand_in(kind: type, index: int, item: int = 0) -> Any:
    # Integers within every integer column's range (Django answers an
    # out-of-range lookup without SQL) and unlike any constant a query holds.
    if kind is int:
        return 1_987_654_301 + 10_000 * index + item
    return f"\x1fstand-in {index}.{item}"


def _width(count: int) -> int:
    """A list argument's length rounded up to a power of two: the list is
    padded (repeating its last item, which IN does not mind), so that a few
    compiled forms serve lists of every length."""
    return 1 << (count - 1).bit_length()


class CompiledQuery:
    """``build(*args)``, a values_list queryset, run with its SQL compiled at
    the first call. ``kinds`` gives each argument's type: int, str, or a list
    of one of them (``[int]``) for an ``__in`` lookup; an empty list matches
    nothing, so only for lists the query's filter ANDs."""

    def __init__(self, build: Callable[..., QuerySet[Any]], *kinds: type | list[type]) -> None:
        self._build = build
        self._kinds = kinds
        # By vendor and widths: the SQL, for each of its parameters where it
        # comes from (an argument's index and item, or a constant), and the
        # compiler with its converters (which convert values alone, whichever
        # thread's connection they were made with).
        self._compiled: dict[tuple[str, tuple[int, ...]], tuple[
            str, list[tuple[int | None, int | None, Any]], Any, Any]] = {}

    def _compile(self, wrapper: BaseDatabaseWrapper, widths: tuple[int, ...]) -> tuple[
            str, list[tuple[int | None, int | None, Any]], Any, Any]:
        key = (wrapper.vendor, widths)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        # stand-in -> (argument, item of a list argument or None)
        places: dict[Any, tuple[int, int | None]] = {}
        stand_ins: list[Any] = []
        lists = iter(widths)
        for index, kind in enumerate(self._kinds):
            if isinstance(kind, list):
                items = [_stand_in(kind[0], index, item) for item in range(next(lists))]
                places.update({value: (index, item) for item, value in enumerate(items)})
                stand_ins.append(items)
            else:
                stand_ins.append(_stand_in(kind, index))
                places[stand_ins[-1]] = (index, None)
        compiler = self._build(*stand_ins).query.get_compiler(connection=wrapper)
        sql, params = compiler.as_sql()
        sources = [(*places[p], None) if p in places else (None, None, p) for p in params]
        assert len({(i, j) for i, j, _ in sources if i is not None}) == len(places)
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        while len(self._compiled) >= _WIDTHS_KEPT:
            self._compiled.pop(next(iter(self._compiled)), None)
        compiled = self._compiled[key] = (sql, sources, compiler, converters)
        return compiled

    def rows(self, *args: Any) -> list[tuple[Any, ...]]:
        lists: list[Sequence[Any]] = [args[index] for index, kind in enumerate(self._kinds)
                                      if isinstance(kind, list)]
        if any(not values for values in lists):
            return []
        wrapper = connections[DEFAULT_DB_ALIAS]
        widths = tuple(_width(len(values)) for values in lists)
        sql, sources, compiler, converters = self._compile(wrapper, widths)
        widths = iter(widths)
        values = [[*arg, *[arg[-1]] * (next(widths) - len(arg))] if isinstance(kind, list)
                  else arg for arg, kind in zip(args, self._kinds, strict=True)]
        params = [constant if index is None else values[index] if item is None
                  else values[index][item] for index, item, constant in sources]
        with wrapper.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if converters:
            rows = [tuple(row) for row in compiler.apply_converters(rows, converters)]
        return rows

    def first(self, *args: Any) -> tuple[Any, ...] | None:
        """The first row (the queryset is sliced [:1] by its builder)."""
        rows = self.rows(*args)
        return rows[0] if rows else None


class CompiledInsert:
    """``Model.objects.bulk_create(objs)`` for the hot writes of a batch (the
    spool's, the outbound queue's, the message trace's), its INSERT built once
    per number of rows: the ORM's bulk_create cost about 150 µs of CPU a call
    plus 30 µs a row, most of it building the same statement again. The
    values still go through each field's ``pre_save`` and
    ``get_db_prep_save``, as the ORM's; the primary keys, when asked for,
    come back with RETURNING (SQLite 3.35+, PostgreSQL) and are set on the
    objects. ``ignore_conflicts`` as bulk_create's (no keys returned then)."""

    def __init__(self, model: type[Model], *, ignore_conflicts: bool = False,
                 return_pks: bool = False) -> None:
        assert not (ignore_conflicts and return_pks), "bulk_create returns no keys then"
        self._model = model
        self._ignore_conflicts = ignore_conflicts
        self._return_pks = return_pks
        # What bulk_create writes for objects without a primary key: every
        # concrete field but an auto-generated key.
        self._fields = [field for field in model._meta.concrete_fields
                        if not (field.primary_key and field.db_returning)]
        assert not any(hasattr(field, "get_placeholder") for field in self._fields)
        self._statements: dict[tuple[str, int], str] = {}

    def _statement(self, wrapper: BaseDatabaseWrapper, rows: int) -> str:
        key = (wrapper.vendor, rows)
        sql = self._statements.get(key)
        if sql is None:
            ops = wrapper.ops
            on_conflict = OnConflict.IGNORE if self._ignore_conflicts else None
            columns = ", ".join(ops.quote_name(field.column) for field in self._fields)
            placeholders = [["%s"] * len(self._fields)] * rows
            sql = (f"{ops.insert_statement(on_conflict=on_conflict)} "
                   f"{ops.quote_name(self._model._meta.db_table)} ({columns}) "
                   f"{ops.bulk_insert_sql(self._fields, placeholders)}")
            suffix = ops.on_conflict_suffix_sql(self._fields, on_conflict, None, None)
            if suffix:
                sql += f" {suffix}"
            if self._return_pks:
                sql += " " + ops.return_insert_columns([self._model._meta.pk])[0]
            self._statements[key] = sql
        return sql

    def insert(self, objs: Sequence[Model]) -> None:
        if not objs:
            return
        wrapper = connections[DEFAULT_DB_ALIAS]
        step = max(wrapper.ops.bulk_batch_size(self._fields, objs), 1)
        for start in range(0, len(objs), step):
            chunk = objs[start:start + step]
            params = [field.get_db_prep_save(field.pre_save(obj, True), wrapper)
                      for obj in chunk for field in self._fields]
            with wrapper.cursor() as cursor:
                cursor.execute(self._statement(wrapper, len(chunk)), params)
                if self._return_pks:
                    for obj, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
                        obj.pk = pk
            for obj in chunk:
                obj._state.adding = False
                obj._state.db = DEFAULT_DB_ALIAS
