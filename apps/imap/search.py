"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 7162 §3.1.5, RFC 5182).

Flag, sequence, UID and MODSEQ keys are answered from the selected folder's
in-memory view; the other keys need one query for the message rows they use
(and the message bytes only for HEADER, BODY and TEXT). Strings match as
case-insensitive substrings, as the RFC asks.
"""

from __future__ import annotations

from datetime import date
from email.header import decode_header, make_header
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from apps.imap import responses as fmt
from apps.imap.parser import SearchKey
from apps.imap.view import FolderView
from apps.store import mime
from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.store.models import Flag
from mailhost.asyncdb import database_sync_to_async

if TYPE_CHECKING:
    from apps.imap.session import IMAPSession

_ADDRESS_FIELDS = {"FROM": "blob__from_text", "TO": "blob__to_text", "CC": "blob__cc_text",
                   "BCC": "blob__bcc_text", "SUBJECT": "blob__subject"}
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "BEFORE": ("internal_date",), "ON": ("internal_date",), "SINCE": ("internal_date",),
    "YOUNGER": ("internal_date",), "OLDER": ("internal_date",),
    "SENTBEFORE": ("blob__sent_date",), "SENTON": ("blob__sent_date",),
    "SENTSINCE": ("blob__sent_date",),
    "LARGER": ("size",), "SMALLER": ("size",),
    **{k: (v,) for k, v in _ADDRESS_FIELDS.items()},
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
_STORED_HEADERS = {"subject": "blob__subject", "from": "blob__from_text",
                   "to": "blob__to_text", "cc": "blob__cc_text", "bcc": "blob__bcc_text"}


def _stored_header(key: SearchKey) -> str | None:
    name, value = key.args
    return _STORED_HEADERS.get(name) if value else None


def _fields(key: SearchKey) -> set[str]:
    needed: set[str] = set()
    for k in _walk(key):
        if k.op == "HEADER" and _stored_header(k):
            needed.add(_stored_header(k) or "")
            continue
        needed.update(_KEY_FIELDS.get(k.op, ()))
    return needed


def _by_uid(rows: list[dict], fields: list[str]) -> dict[int, dict]:
    if "blob_id" in fields:  # HEADER, BODY and TEXT read the message bytes
        blobs = get_blob_store()
        for row in rows:
            row["raw"] = blobs.read(row["blob_id"])
    return {row["uid"]: row for row in rows}


def _load(folder_id: int, uids: list[int], fields: list[str]) -> dict[int, dict]:
    return _by_uid(store.message_rows(folder_id, uids, fields), fields)


async def run(session: IMAPSession, key: SearchKey) -> list[int]:
    """0-based positions of the matching messages, ascending."""
    view = session.view
    assert view is not None
    fields = _fields(key)
    rows: dict[int, dict] = {}
    if fields and len(view):
        rows = await database_sync_to_async(_load)(
            view.folder_id, list(view.uids), sorted(fields))
    return _positions(view, session.saved, rows, key)


def _positions(view: FolderView, saved: list[int], rows: dict[int, dict],
               key: SearchKey) -> list[int]:
    matcher = _Matcher(view, saved, rows)
    # Messages expunged by another session but not yet told are not found
    # (RFC 2180 §4.1.3 leaves this to the server): they cannot be fetched either.
    gone = view.pending_expunge
    return [p for p in range(len(view))
            if view.uids[p] not in gone and matcher.match(key, p)]


def search_folder(folder_id: int, key: SearchKey) -> list[int]:
    """UIDs of a folder's messages that match ``key``, ascending: the same
    evaluation as SEARCH in a session, over a fresh view of the folder (for
    front ends without a selected folder, such as the webmail). One query
    reads the view and the fields the key needs."""
    fields = sorted(_fields(key))
    changes, found = store.folder_rows(folder_id, fields)
    view = FolderView(folder_id=folder_id, name="", uidvalidity=0, readonly=True)
    view.apply(changes, allow_expunge=True)
    return [view.uids[p] for p in _positions(view, [], _by_uid(found, fields), key)]


def _casefold_in(needle: str, haystack: str | None) -> bool:
    return needle.casefold() in (haystack or "").casefold()


def _decoded(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word: search the raw text
        return text


class _Matcher:
    def __init__(self, view: FolderView, saved: list[int], rows: dict[int, dict]) -> None:
        self.view = view
        self.saved = saved
        self.rows = rows
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
        row = self.rows.get(uid)
        if row is None:
            return False  # expunged meanwhile
        if op in ("BEFORE", "ON", "SINCE"):
            return _compare_date(op, row["internal_date"].date(), key.args[0])
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            sent = row["blob__sent_date"]
            if sent is None:
                return False
            return _compare_date(op[4:], sent.date(), key.args[0])
        if op in ("YOUNGER", "OLDER"):
            age = (timezone.now() - row["internal_date"]).total_seconds()
            return age <= key.args[0] if op == "YOUNGER" else age > key.args[0]
        if op == "LARGER":
            return row["size"] > key.args[0]
        if op == "SMALLER":
            return row["size"] < key.args[0]
        if op in _ADDRESS_FIELDS:
            return _casefold_in(key.args[0], row[_ADDRESS_FIELDS[op]])
        if op == "HEADER":
            name, value = key.args
            stored = _stored_header(key)
            if stored is not None:
                return _casefold_in(value, row[stored])
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
        fields = self._cache.get((uid, "fields"))
        if fields is None:
            block = row["raw"][:row["blob__bodystructure"]["body_start"]]
            fields = self._cache[(uid, "fields")] = fmt.header_lines(block)
        return [(field_name, _decoded(field.split(b":", 1)[1].replace(b"\r\n", b"").strip()
                                      if b":" in field else b""))
                for field_name, field in fields if name is None or field_name == name]

    def _body(self, uid: int, row: dict) -> str:
        cached = self._cache.get((uid, "body"))
        if cached is None:
            raw = row["raw"]
            cached = mime.extract_text(raw)
            start = row["blob__bodystructure"]["body_start"]
            # Parts that are not text (or could not be decoded) are searched raw.
            cached += "\n" + raw[start:].decode("utf-8", "replace")
            self._cache[(uid, "body")] = cached
        return cached


def _compare_date(op: str, value: date, wanted: date) -> bool:
    if op == "BEFORE":
        return value < wanted
    if op == "ON":
        return value == wanted
    return value >= wanted
