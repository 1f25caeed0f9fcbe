"""Pagination for the panel's list pages that stays cheap at 100,000 rows: the
total is counted only up to a cap (``COUNT(*)`` over a ``LIMIT``), so a page
never counts a whole big table, and the rows are one query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpRequest

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
COUNT_CAP = 10_000


@dataclass
class Page:
    rows: list[Any]
    number: int
    size: int
    total: int  # at most COUNT_CAP
    capped: bool  # more rows than COUNT_CAP
    query: dict[str, str] = field(default_factory=dict)

    @property
    def first_index(self) -> int:
        return (self.number - 1) * self.size + 1 if self.rows else 0

    @property
    def last_index(self) -> int:
        return (self.number - 1) * self.size + len(self.rows)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.last_index < self.total or self.capped

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    def link(self, number: int) -> str:
        return "?" + urlencode({**self.query, "page": number})

    @property
    def previous_link(self) -> str:
        return self.link(self.number - 1)

    @property
    def next_link(self) -> str:
        return self.link(self.number + 1)


def search_text(request: HttpRequest, name: str) -> str:
    """A list filter's text as typed, trimmed and lower-cased (addresses and
    domain names are stored lower-case). NUL is dropped: PostgreSQL refuses it
    in a query, and no address contains it."""
    return request.GET.get(name, "").replace("\x00", "").strip().lower()[:320]


def _positive(value: str | None, default: int) -> int:
    try:
        number = int(value or default)
    except ValueError:
        return default
    return number if number > 0 else default


def paginate(request: HttpRequest, queryset: QuerySet, *,
             rows: Callable[[QuerySet], QuerySet] = lambda q: q) -> Page:
    """The page the request asks for (``page``, ``size``) of ``queryset``;
    ``rows`` adds what only the shown rows need (annotations), so that the
    count stays a bare one."""
    size = _positive(request.GET.get("size"), DEFAULT_PAGE_SIZE)
    if size not in PAGE_SIZES:
        size = DEFAULT_PAGE_SIZE
    total = queryset.order_by()[:COUNT_CAP + 1].count()
    capped = total > COUNT_CAP
    total = min(total, COUNT_CAP)
    last_page = max(1, -(-total // size))
    number = _positive(request.GET.get("page"), 1)
    if not capped:
        number = min(number, last_page)
    start = (number - 1) * size
    shown = list(rows(queryset)[start:start + size])
    query = {key: value for key, value in request.GET.items() if key != "page" and value}
    return Page(shown, number, size, total, capped, query)
