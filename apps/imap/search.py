"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 7162 §3.1.5, RFC 5182).

Flag, sequence, UID and MODSEQ keys are answered from the selected folder's
in-memory view. String keys (FROM, TO, CC, BCC, SUBJECT, HEADER, BODY, TEXT)
are looked up in the store's full-text index (apps/store/textindex.py), one
query per key whatever the folder's size; only the messages the index cannot
answer for (not indexed yet, a very large body, a HEADER field other than
the address and subject fields) are read and compared here. The other keys
need one query for the message rows they use. Strings match as
case-insensitive substrings, as the RFC asks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from email.utils import parsedate_tz
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from apps.imap.parser import SearchKey
from apps.imap.view import FolderView
from apps.store import filed, mime, textindex
from apps.store import services as store
from apps.store.models import Flag
from mailhost.asyncdb import database_sync_to_async

if TYPE_CHECKING:
    from apps.imap.session import IMAPSession

_ADDRESS_FIELDS = {"FROM": "blob__from_text", "TO": "blob__to_text", "CC": "blob__cc_text",
                   "BCC": "blob__bcc_text", "SUBJECT": "blob__subject"}
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "BEFORE": ("internal_date",), "ON": ("internal_date",), "SINCE": ("internal_date",),
    "YOUNGER": ("internal_date",), "OLDER": ("internal_date",),
    "SENTBEFORE": ("blob__sent_date", "blob__envelope"),
    "SENTON": ("blob__sent_date", "blob__envelope"),
    "SENTSINCE": ("blob__sent_date", "blob__envelope"),
    "LARGER": ("size",), "SMALLER": ("size",),
    **{k: (v, "blob__envelope") for k, v in _ADDRESS_FIELDS.items()},
    "SUBJECT": ("blob__subject",),
    "HEADER": ("blob_id", "blob__bodystructure"), "BODY": ("blob_id", "blob__bodystructure"),
    "TEXT": ("blob_id", "blob__bodystructure"),
    # Not an IMAP key: the webmail's has:attachment, evaluated by the same matcher.
    "HASATTACHMENT": ("blob__bodystructure",),
}


def _walk(key: SearchKey) -> list[SearchKey]:
    keys = [key]
    for arg in key.args:
        if isinstance(arg, SearchKey):
            keys += _walk(arg)
    return keys


def uses_modseq(key: SearchKey) -> bool:
    return any(k.op == "MODSEQ" for k in _walk(key))


def uses_saved(key: SearchKey) -> bool:
    return any(k.op in ("SEQ", "UID") and k.args[0].saved for k in _walk(key))


# Header fields whose decoded text the store keeps on the blob row: a HEADER
# search on them with a non-empty string needs no message bytes.
_STORED_HEADERS = {name: f"blob__{column}"
                   for name, column in textindex.STORED_HEADERS.items()}


def _stored_header(key: SearchKey) -> str | None:
    name, value = key.args
    return _STORED_HEADERS.get(name) if value else None


def _stored_text(row: dict, field: str) -> str:
    """A stored header's text as the index holds it (addresses spelled out too)."""
    column = field.removeprefix("blob__")
    if column in textindex.ENVELOPE_ADDRESSES:
        return textindex.address_text(row[field], row["blob__envelope"], column)
    return row[field]


def _fields(keys: list[SearchKey]) -> set[str]:
    needed: set[str] = set()
    for k in keys:
        if k.op == "HEADER" and _stored_header(k):
            needed.update((_stored_header(k) or "", "blob__envelope"))
            continue
        needed.update(_KEY_FIELDS.get(k.op, ()))
    return needed


def _index_question(key: SearchKey) -> tuple[tuple[str, ...], str, bool] | None:
    """(index columns, string, whether the index's answer is the key's) for a
    key the full-text index can narrow, else None."""
    # The string is the last argument; HEADER with an empty one asks whether
    # the field is there, which only the message's header says.
    if key.op in ("HEADER", *_ADDRESS_FIELDS, "BODY", "TEXT") and \
            not textindex.answers_for(key.args[-1]):
        return None
    if key.op in _ADDRESS_FIELDS:
        return (_ADDRESS_FIELDS[key.op].removeprefix("blob__"),), key.args[0], True
    if key.op == "BODY":
        return ("body",), key.args[0], True
    if key.op == "TEXT":
        return ("headers", "body"), key.args[0], True
    if key.op == "HEADER":
        name, value = key.args
        if name in textindex.STORED_HEADERS:
            return (textindex.STORED_HEADERS[name],), value, True
        # The value is somewhere in the header; in the named field, the
        # message's header says.
        return ("headers",), value, False
    return None


@dataclass(frozen=True)
class _IndexAnswer:
    hits: set[int]  # UIDs whose indexed text holds the string
    unknown: frozenset[int]  # UIDs the index cannot answer for
    exact: bool  # the hits are the key's matches (else candidates)

    def to_read(self) -> set[int]:
        return set(self.unknown) if self.exact else self.hits | self.unknown


def _ask_index(folder_id: int, keys: list[SearchKey]) -> dict[int, _IndexAnswer]:
    """The index's answers, by ``id()`` of the key: one query per string key."""
    answers = {}
    for key in keys:
        question = _index_question(key)
        if question is not None:
            columns, needle, exact = question
            found = textindex.lookup(folder_id, columns, needle)
            answers[id(key)] = _IndexAnswer(found.hits, frozenset(found.unknown), exact)
    return answers


def _by_uid(rows: list[dict], fields: list[str]) -> dict[int, dict]:
    if "blob_id" in fields:  # HEADER, BODY and TEXT read the message bytes
        filed.read_bytes(rows)
    return {row["uid"]: row for row in rows}


def _unanswered_fields(keys: list[SearchKey]) -> list[str]:
    """Fields every message needs read for the keys the index does not answer."""
    return sorted(_fields([k for k in keys if _index_question(k) is None]))


def _read_checked(folder_id: int, keys: list[SearchKey], answers: dict[int, _IndexAnswer],
                  rows: dict[int, dict]) -> dict[int, dict]:
    """``rows`` with the fields (and bytes) of the messages the index could not
    answer for, to be compared here: one query, none if there are none."""
    checked = sorted(set().union(*(answer.to_read() for answer in answers.values())))
    fields = sorted(_fields([k for k in keys if id(k) in answers]))
    if checked:
        found = store.message_rows(folder_id, checked, fields)
        for uid, row in _by_uid(found, fields).items():
            rows.setdefault(uid, {}).update(row)
    return rows


def _gather(folder_id: int, uids: list[int], key: SearchKey,
            ) -> tuple[dict[int, _IndexAnswer], dict[int, dict]]:
    keys = _walk(key)
    answers = _ask_index(folder_id, keys)
    fields = _unanswered_fields(keys)
    rows: dict[int, dict] = {}
    if fields:
        rows = _by_uid(store.message_rows(folder_id, uids, fields), fields)
    return answers, _read_checked(folder_id, keys, answers, rows)


async def run(session: IMAPSession, key: SearchKey,
              among: Collection[int] | None = None) -> list[int]:
    """0-based positions of the matching messages, ascending; only of the
    UIDs ``among`` when given (a search context told of their change)."""
    view = session.view
    assert view is not None
    uids = list(view.uids) if among is None else sorted(among)
    answers: dict[int, _IndexAnswer] = {}
    rows: dict[int, dict] = {}
    if _fields(_walk(key)) and uids:
        answers, rows = await database_sync_to_async(_gather)(view.folder_id, uids, key)
    return _positions(view, session.saved, rows, answers, key, among)


def _candidates(key: SearchKey, answers: dict[int, _IndexAnswer]) -> set[int] | None:
    """UIDs outside which ``key`` cannot match, by the index's answers; None
    when any message may. A string key matches only where the index found
    the string or cannot tell, so a SEARCH BODY on 100,000 messages compares
    only the few it names."""
    if id(key) in answers:
        answer = answers[id(key)]
        return answer.hits | answer.unknown
    if key.op == "AND":
        bounds = [bound for bound in (_candidates(k, answers) for k in key.args)
                  if bound is not None]
        return set.intersection(*bounds) if bounds else None
    if key.op == "OR":
        left, right = (_candidates(k, answers) for k in key.args)
        return None if left is None or right is None else left | right
    return None


def _positions(view: FolderView, saved: list[int], rows: dict[int, dict],
               answers: dict[int, _IndexAnswer], key: SearchKey,
               among: Collection[int] | None = None) -> list[int]:
    matcher = _Matcher(view, saved, rows, answers)
    # Messages expunged by another session but not yet told are not found
    # (RFC 2180 §4.1.3 leaves this to the server): they cannot be fetched either.
    gone = view.pending_expunge
    bound = _candidates(key, answers)
    if among is not None:
        bound = set(among) if bound is None else bound.intersection(among)
    positions = range(len(view)) if bound is None else sorted(
        p for p in map(view.index, bound) if p is not None)
    return [p for p in positions if view.uids[p] not in gone and matcher.match(key, p)]


def search_folder(folder_id: int, key: SearchKey) -> list[int]:
    """UIDs of a folder's messages that match ``key``, ascending: the same
    evaluation as SEARCH in a session, over a fresh view of the folder (for
    front ends without a selected folder, such as the webmail). One query
    reads the view and the fields the keys the index does not answer need;
    the index is asked after, so that it knows every message of the view."""
    keys = _walk(key)
    fields = _unanswered_fields(keys)
    changes, found = store.folder_rows(folder_id, fields)
    view = FolderView(folder_id=folder_id, name="", uidvalidity=0, readonly=True)
    view.apply(changes, allow_expunge=True)
    answers = _ask_index(folder_id, keys)
    rows = _read_checked(folder_id, keys, answers, _by_uid(found, fields))
    return [view.uids[p] for p in _positions(view, [], rows, answers, key)]


def _casefold_in(needle: str, haystack: str | None) -> bool:
    return needle.casefold() in (haystack or "").casefold()


class _Matcher:
    def __init__(self, view: FolderView, saved: list[int], rows: dict[int, dict],
                 answers: dict[int, _IndexAnswer]) -> None:
        self.view = view
        self.saved = saved
        self.rows = rows
        self.answers = answers
        self.largest_uid = self.view.uids[-1] if self.view.uids else 0
        self._cache: dict[tuple[int, str], Any] = {}

    def match(self, key: SearchKey, position: int) -> bool:
        view = self.view
        op = key.op
        uid = view.uids[position]
        if op == "ALL":
            return True
        if op == "AND":
            return all(self.match(k, position) for k in key.args)
        if op == "OR":
            return self.match(key.args[0], position) or self.match(key.args[1], position)
        if op == "NOT":
            return not self.match(key.args[0], position)
        if op in ("SEQ", "UID"):
            seqs = key.args[0]
            if seqs.saved:
                return uid in self.saved
            if op == "SEQ":
                return seqs.contains(position + 1, len(view))
            return seqs.contains(uid, self.largest_uid)
        if op == "FLAG":
            name, present = key.args
            bit = Flag.NAMES.get(name)
            if bit is not None:
                has = bool(view.flags[position] & bit)
            elif name == "\\Recent":
                has = uid in view.recent
            else:
                has = name.lower() in (k.lower() for k in view.keywords.get(uid, ()))
            return has == present
        if op == "NEW":
            return uid in view.recent and not view.flags[position] & Flag.SEEN
        if op == "RECENT":
            return uid in view.recent
        if op == "OLD":
            return uid not in view.recent
        if op == "MODSEQ":
            return view.modseqs[position] >= key.args[0]
        answer = self.answers.get(id(key))
        if answer is not None and uid not in answer.unknown:
            if uid not in answer.hits:
                return False
            if answer.exact:
                return True
        row = self.rows.get(uid)
        if row is None:
            return False  # expunged meanwhile
        if op in ("BEFORE", "ON", "SINCE"):
            return _compare_date(op, row["internal_date"].date(), key.args[0])
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            sent = _sent_day(row)
            if sent is None:
                return False
            return _compare_date(op[4:], sent, key.args[0])
        if op in ("YOUNGER", "OLDER"):
            age = (timezone.now() - row["internal_date"]).total_seconds()
            return age <= key.args[0] if op == "YOUNGER" else age > key.args[0]
        if op == "LARGER":
            return row["size"] > key.args[0]
        if op == "SMALLER":
            return row["size"] < key.args[0]
        if op in _ADDRESS_FIELDS:
            return _casefold_in(key.args[0], _stored_text(row, _ADDRESS_FIELDS[op]))
        if op == "HEADER":
            name, value = key.args
            stored = _stored_header(key)
            if stored is not None:
                return _casefold_in(value, _stored_text(row, stored))
            found = [v for _n, v in self._headers(uid, row, name)]
            return bool(found) and (not value or any(_casefold_in(value, v) for v in found))
        if op == "HASATTACHMENT":
            return mime.has_attachment(row["blob__bodystructure"])
        if op == "BODY":
            return _casefold_in(key.args[0], self._body(uid, row))
        if op == "TEXT":
            header = "\n".join(v for _n, v in self._headers(uid, row))
            return _casefold_in(key.args[0], header) or \
                _casefold_in(key.args[0], self._body(uid, row))
        raise ValueError(op)

    def _headers(self, uid: int, row: dict, name: str | None = None) -> list[tuple[str, str]]:
        """Header fields (lower-case name, decoded value); only ``name`` if given,
        so that a HEADER search decodes only the fields it looks at."""
        return textindex.header_values(row["raw"], row["blob__bodystructure"]["body_start"],
                                       name)

    def _body(self, uid: int, row: dict) -> str:
        cached = self._cache.get((uid, "body"))
        if cached is None:
            cached = self._cache[(uid, "body")] = textindex.body_text(
                row["raw"], row["blob__bodystructure"])
        return cached


def _sent_day(row: dict) -> date | None:
    """RFC 3501 §6.4.4 SENT*: the day of the Date: header as written, time and
    zone disregarded ("Sun, 25 Mar 2007 00:00:00 +0200" is 25 March)."""
    written = (row["blob__envelope"] or [None])[0]
    parsed = parsedate_tz(written) if written else None
    if parsed is not None:
        with contextlib.suppress(ValueError):
            return date(parsed[0], parsed[1], parsed[2])
    sent = row["blob__sent_date"]
    return sent.date() if sent is not None else None


def _compare_date(op: str, value: date, wanted: date) -> bool:
    if op == "BEFORE":
        return value < wanted
    if op == "ON":
        return value == wanted
    return value >= wanted
