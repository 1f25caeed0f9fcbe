"""The search box's little language, parsed into an IMAP search key.

``from:ann subject:"budget 2025" has:attachment after:2025-01-01 report``
becomes AND(FROM ann, SUBJECT "budget 2025", HASATTACHMENT, SINCE 2025-01-01,
TEXT report), which the same evaluator as IMAP SEARCH runs
(``apps.imap.search.search_folder``). Pure: a string (or bytes) in, a key out.
"""

from __future__ import annotations

import re
from datetime import date

from apps.imap.parser import SearchKey

MAX_QUERY = 500
MAX_TERMS = 20

# RFC 3501 §6.4.4 keys the prefixes stand for.
_FIELDS = {"from": "FROM", "to": "TO", "cc": "CC", "subject": "SUBJECT", "body": "BODY"}
_FLAGS = {"unread": ("\\Seen", False), "read": ("\\Seen", True),
          "flagged": ("\\Flagged", True), "starred": ("\\Flagged", True),
          "answered": ("\\Answered", True)}
# A term: optional "-", optional "name:", then a quoted phrase or a bare word.
_TERM = re.compile(r'\s*(-?)(?:([A-Za-z]+):)?(?:"([^"]*)"?|(\S+))')


class QueryError(ValueError):
    """What is wrong with a query, in words for the search field."""


def _date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise QueryError(f"{name}: wants a date such as 2025-01-31") from None


def _term(name: str | None, value: str) -> SearchKey:
    if name is None:
        return SearchKey("TEXT", (value,))
    if name.lower() in _FIELDS:
        return SearchKey(_FIELDS[name.lower()], (value,))
    if name.lower() == "has":
        if value.lower() in ("attachment", "attachments"):
            return SearchKey("HASATTACHMENT")
        raise QueryError("has: knows only has:attachment")
    if name.lower() == "is":
        if value.lower() in _FLAGS:
            return SearchKey("FLAG", _FLAGS[value.lower()])
        raise QueryError(f"is: knows {', '.join(sorted(_FLAGS))}")
    if name.lower() == "before":
        return SearchKey("BEFORE", (_date(name, value),))
    if name.lower() == "after":
        return SearchKey("SINCE", (_date(name, value),))
    # Not a prefix we know ("http://…", "re:"): the words as they are.
    return SearchKey("TEXT", (f"{name}:{value}",))


def parse(query: str | bytes) -> SearchKey | None:
    """The key for a query; None for an empty one. Raises QueryError."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if len(query) > MAX_QUERY:
        raise QueryError(f"a search is at most {MAX_QUERY} characters")
    keys: list[SearchKey] = []
    for match in _TERM.finditer(query):
        negate, name, phrase, word = match.groups()
        value = phrase if phrase is not None else word
        if value is None or (not value and name is None):
            continue
        if not value:
            raise QueryError(f"{name}: needs something after the colon")
        key = _term(name, value)
        keys.append(SearchKey("NOT", (key,)) if negate else key)
        if len(keys) > MAX_TERMS:
            raise QueryError(f"a search has at most {MAX_TERMS} terms")
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
