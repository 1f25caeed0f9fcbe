"""The full-text index: each blob's searchable text, and lookups in it.

IMAP SEARCH compares strings as case-insensitive substrings (RFC 3501 §6.4.4:
"a message matches the key if the string is a substring of the field. The
matching is case-insensitive"). The text SEARCH compares is defined here once
(``header_values``, ``body_text``), used both by the evaluator in
apps/imap/search.py and to fill the index, and stored case-folded (Python's
``str.casefold``, as the evaluator compares) in ``BlobText``. A substring
lookup on that text is then exact: SQLite answers it from an FTS5 trigram
table (GLOB '*needle*'), PostgreSQL from pg_trgm GIN indexes (LIKE
'%needle%'); see migration 0004.

The index cannot answer for a blob written before it existed (until
``manage.py reindex`` has run) nor for the end of a very large body; those
messages are reported as ``unindexed`` and the caller reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from functools import partial

from django.db import connection, transaction
from django.db.models import Q, QuerySet, Value
from django.db.models.expressions import RawSQL

from apps.store import mime
from apps.store.blobs import get_blob_store
from apps.store.models import Blob, BlobText, Message

# The indexed columns of BlobText (migration 0004 indexes the same).
COLUMNS = ("from_text", "to_text", "cc_text", "bcc_text", "subject", "headers", "body")
# Header fields whose decoded text the store keeps on the Blob row, by the
# BlobText column that holds them case-folded.
STORED_HEADERS = {"subject": "subject", "from": "from_text", "to": "to_text",
                  "cc": "cc_text", "bcc": "bcc_text"}
# Bodies longer than this (decoded text plus raw body, in characters) are
# indexed only in part: a 40 MB attachment would cost more to index than to
# read on the rare search that needs it.
MAX_BODY_CHARS = 2_000_000
# FTS5's trigram index needs three characters; shorter needles scan the
# folder's rows instead.
_TRIGRAM = 3
# What the databases cannot store (NUL, lone surrogates) is stored as U+FFFD;
# a needle holding U+FFFD itself is therefore left to the caller.
_UNSTORABLE = "\ufffd"
_UNSTORABLE_CHARS = re.compile("[\\x00\\ud800-\\udfff]")
# GLOB's wildcards, matched literally when bracketed.
_GLOB_SPECIAL = re.compile(r"[*?\\[]")


def header_lines(block: bytes) -> list[tuple[str, bytes]]:
    """Split a header block into (lower-case name, raw field with folding)."""
    fields: list[tuple[str, bytes]] = []
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        name = line.split(b":", 1)[0].strip().decode("latin-1").lower()
        fields.append((name, line))
    return fields


def decoded_value(field: bytes) -> str:
    """A raw header field's value, unfolded, with RFC 2047 encoded words decoded."""
    value = field.split(b":", 1)[1].replace(b"\r\n", b"").strip() if b":" in field else b""
    text = value.decode("utf-8", "replace")
    if "=?" not in text:  # no encoded word (RFC 2047 §2): decoding would return it as is
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word: search the raw text
        return text


def header_values(raw: bytes, body_start: int, name: str | None = None,
                  ) -> list[tuple[str, str]]:
    """(lower-case name, decoded value) of the header fields of a message, as
    SEARCH HEADER and TEXT compare them; only those named ``name`` if given."""
    return [(field_name, decoded_value(field))
            for field_name, field in header_lines(raw[:body_start])
            if name is None or field_name == name]


def body_text(raw: bytes, bodystructure: dict) -> str:
    """The text SEARCH BODY compares: the decoded text parts, then the raw
    body, so that parts which are not text (or could not be decoded) are
    searched as they are; only the decoded text where the raw body holds no
    other (``_raw_body_adds_text``)."""
    text = mime.extract_text(raw, limit=_EXTRACTED_CHARS)
    body = raw[bodystructure["body_start"]:]
    if not _raw_body_adds_text(body, text, bodystructure):
        return text
    return text + "\n" + body.decode("utf-8", "replace")


# mime.extract_text's limit: a body of fewer bytes cannot have been cut.
_EXTRACTED_CHARS = 1_000_000


def _raw_body_adds_text(body: bytes, text: str, root: dict) -> bool:
    """Whether the raw body says more than its decoded ``text``. Not for a
    message of one text/plain part sent as it is, whose UTF-8 reading is
    ``text`` again with CRLF line ends, or with U+FFFD for each byte that is no
    UTF-8 where its charset read one non-ASCII character (Latin-1 and the
    like): the raw copy would only double the index. It stays for every other
    body, and for a part that reads differently as UTF-8 (labelled with the
    wrong charset, or mixing encodings), where it finds what the label hides."""
    if (root.get("parts") or root.get("message") is not None
            or (root["type"], root["subtype"]) != ("text", "plain")
            or not mime.leaves_bytes_as_they_are(root["encoding"])
            or len(body) >= _EXTRACTED_CHARS):
        return True
    as_utf8 = body.decode("utf-8", "replace").replace("\r\n", "\n").strip()
    if as_utf8 == text:
        return False
    # Every non-ASCII character as "?" on both sides: equal only if they
    # differ where the bytes are no UTF-8, one character for one byte.
    return "\ufffd" not in as_utf8 or (
        as_utf8.encode("ascii", "replace") != text.encode("ascii", "replace"))


# Where each address header's list sits in an ENVELOPE (RFC 3501 §7.4.2).
ENVELOPE_ADDRESSES = {"from_text": 2, "to_text": 5, "cc_text": 6, "bcc_text": 7}


def address_text(text: str, envelope: list | None, column: str) -> str:
    """An address header's decoded text as FROM/TO/CC/BCC search it: the text,
    then each address as plain mailbox@host, so that "user@domain.org" finds
    "<user (comment)@ (comment) domain.org>" as Dovecot does."""
    addresses = (envelope or [None] * 8)[ENVELOPE_ADDRESSES[column]] or ()
    plain = [f"{a[2]}@{a[3]}" for a in addresses if a[2] is not None and a[3] is not None]
    return "\n".join([text, *plain]) if plain else text


def storable(text: str) -> str:
    """``text`` as both databases can keep it: NUL and lone surrogates, which
    PostgreSQL refuses in text and jsonb, become U+FFFD."""
    return _UNSTORABLE_CHARS.sub(_UNSTORABLE, text)


def storable_value(value: object) -> object:
    """``storable`` through a parsed structure (lists of strings, None, ints),
    as a cached ENVELOPE or BODYSTRUCTURE is; ``value`` itself when nothing
    in it needs a change, the common case."""
    if isinstance(value, str):
        return storable(value) if _UNSTORABLE_CHARS.search(value) else value
    if isinstance(value, list):
        return [storable_value(item) for item in value]
    if isinstance(value, dict):
        return {key: storable_value(item) for key, item in value.items()}
    return value


def text_row(blob: Blob, raw: bytes) -> BlobText:
    """The index row of a blob, from its parsed row and its bytes."""
    body_start = blob.bodystructure["body_start"]
    body = body_text(raw, blob.bodystructure)
    complete = len(body) <= MAX_BODY_CHARS
    headers = "\n".join(value for _name, value in header_values(raw, body_start))
    return BlobText(
        blob_id=blob.sha256, complete=complete,
        **{column: _fold(address_text(getattr(blob, column), blob.envelope, column))
           for column in ENVELOPE_ADDRESSES},
        subject=_fold(blob.subject), headers=_fold(headers),
        body=_fold(body if complete else body[:MAX_BODY_CHARS]),
    )


def _fold(text: str) -> str:
    return storable(text.casefold())


def index_rows(rows: Iterable[BlobText]) -> None:
    """Insert index rows, one statement; a blob indexed already keeps its row.
    Their blobs are marked indexed (``Blob.text_indexed``), which a blob row
    created before its index row (spooled, or indexed after commit) is not."""
    rows = list(rows)
    BlobText.objects.bulk_create(rows, ignore_conflicts=True)
    if rows:
        Blob.objects.filter(pk__in=[row.blob_id for row in rows],
                            text_indexed=False).update(text_indexed=True)


def answers_for(needle: str) -> bool:
    """Whether the index can look ``needle`` up: not the empty string (every
    message holds it), nor one with a character the databases cannot store."""
    folded = needle.casefold()
    return bool(folded) and _UNSTORABLE not in folded and not _UNSTORABLE_CHARS.search(folded)


@dataclass(frozen=True)
class Lookup:
    """The index's answer for one string in a folder, by UID."""

    hits: set[int]  # the message's text holds the string
    unknown: set[int]  # the index lacks the message's text (in whole or in part)


def lookup(folder_id: int, columns: Sequence[str], needle: str) -> Lookup:
    """Which of the folder's messages hold ``needle`` in any of ``columns``
    (case-insensitively, RFC 3501 §6.4.4), and which the index cannot answer
    for. Only for a needle ``answers_for`` accepts; messages in neither set do
    not hold it. Two queries that touch only the messages of the blobs found
    and of the blobs not (wholly) indexed, through small partial indexes,
    never every message of the folder (except for a needle too short for
    SQLite's trigrams)."""
    if not set(columns) <= set(COLUMNS):
        raise ValueError(f"not an index column: {columns}")
    folded = needle.casefold()
    messages = Message.objects.filter(folder_id=folder_id).order_by()
    if connection.vendor == "sqlite" and len(folded) < _TRIGRAM:
        # Too short for the trigram index: a scan of the folder's rows.
        found = Q()
        for column in columns:
            found |= Q(**{f"blob__search_text__{column}__contains": folded})
        holding = messages.filter(found)
    else:
        holding = messages.filter(blob_id__in=_texts_holding(columns, folded))
    unread = [Blob.objects.filter(text_indexed=False).values("sha256")]
    if "body" in columns:
        # Only the start of a very large body is indexed: read the rest.
        unread.append(BlobText.objects.filter(complete=False).values("blob_id"))
    # One round trip: each part of the compound SELECT keeps its own plan.
    parts = [messages.filter(blob_id__in=blobs).annotate(known=Value(False))
             .values_list("uid", "known") for blobs in unread]
    rows = holding.annotate(known=Value(True)).values_list("uid", "known") \
        .union(*parts, all=True)
    hits, unknown = set(), set()
    for uid, known in rows:
        (hits if known else unknown).add(uid)
    hits -= unknown
    if "headers" in columns:
        hits |= _added_fields_holding(folder_id, folded)
    return Lookup(hits, unknown)


def _added_fields_holding(folder_id: int, folded: str) -> set[int]:
    """Messages whose header fields added at filing (``Message.added_headers``,
    which the blob's index row does not hold) have ``folded`` in a value."""
    rows = (Message.objects.filter(folder_id=folder_id).exclude(added_headers=b"")
            .order_by().values_list("uid", "added_headers"))
    return {uid for uid, added in rows
            if folded in _fold("\n".join(value for _name, value in header_values(
                bytes(added), len(added))))}


def _texts_holding(columns: Sequence[str], folded: str) -> QuerySet[BlobText]:
    """The blobs (``blob_id``) of the index rows with ``folded`` in any of
    ``columns``, through the index."""
    if connection.vendor != "sqlite":
        # PostgreSQL: LIKE '%needle%' (Django escapes it), by the pg_trgm GIN indexes.
        holding = Q()
        for column in columns:
            holding |= Q(**{f"{column}__contains": folded})
        return BlobText.objects.filter(holding).values("blob_id")
    # SQLite: the FTS5 trigram table answers GLOB, one column at a time (not an
    # OR of columns); GLOB is case-sensitive and the stored text is folded.
    pattern = "*" + _GLOB_SPECIAL.sub(r"[\g<0>]", folded) + "*"
    # The column names are checked by the caller; the values are parameters.
    sql = " UNION ".join(
        f"SELECT rowid FROM store_blobtext_fts WHERE {column} GLOB %s"  # noqa: S608
        for column in columns)
    return BlobText.objects.filter(
        id__in=RawSQL(sql, [pattern] * len(columns))).values("blob_id")  # noqa: S611


@dataclass(frozen=True)
class Backfill:
    """One batch of ``index_missing``."""

    indexed: int
    unreadable: list[str]  # blobs whose bytes could not be read: still unindexed
    last: str  # the sha256 to continue after; "" when no blob was left


def _unindexed() -> QuerySet[Blob]:
    """Parsed blobs without an index row, with the fields ``text_row`` reads."""
    return (Blob.objects.filter(search_text__isnull=True)
            .exclude(bodystructure={})  # spooled, not parsed: indexed when delivered
            .only("sha256", "bodystructure", "subject", "from_text", "to_text", "cc_text",
                  "bcc_text", "envelope"))


def _index(blobs: Sequence[Blob]) -> tuple[int, list[str]]:
    """Read, tokenise (before the write transaction: SQLite has one writer) and
    index ``blobs``; (rows written, blobs whose bytes could not be read)."""
    store = get_blob_store()
    rows, unreadable = [], []
    for blob in blobs:
        try:
            rows.append(text_row(blob, store.read(blob.sha256)))
        except OSError:
            unreadable.append(blob.sha256)
    with transaction.atomic():
        index_rows(rows)
    return len(rows), unreadable


def index_missing(*, after: str = "", limit: int = 500) -> Backfill:
    """Index up to ``limit`` blobs that have no index row, in sha256 order after
    ``after``, in one transaction (one select, one insert). Searches read the
    blobs not indexed yet, so this can run while mail flows, and be stopped
    and started again."""
    blobs = list(_unindexed().filter(sha256__gt=after).order_by("sha256")[:limit])
    indexed, unreadable = _index(blobs)
    return Backfill(indexed, unreadable, blobs[-1].sha256 if blobs else "")


def forget_lost_rows() -> int:
    """Mark unindexed the blobs marked indexed whose index rows are gone (deleted
    behind the store's back), so that searches read them until ``index_missing``
    has indexed them again; how many. One scan of the blobs: for ``reindex``."""
    return Blob.objects.filter(text_indexed=True, search_text__isnull=True) \
        .update(text_indexed=False)


def index_blobs(shas: Sequence[str]) -> int:
    """Index those of ``shas`` that have no index row yet (the task that
    ``index_after_commit`` queues); how many were indexed."""
    return _index(list(_unindexed().filter(sha256__in=list(shas))))[0]


def index_after_commit(shas: Sequence[str]) -> None:
    """Have ``shas``, delivered by the current transaction without their index
    rows, indexed by a worker once it commits. The committed blob row without
    an index row is the durable marker: until the task has run (or, if the
    task is lost with its worker, until the periodic ``index_unindexed``),
    searches read the message itself (``lookup``'s ``unknown``)."""
    from apps.store import tasks

    if shas:
        transaction.on_commit(partial(tasks.index_blobs.delay, list(shas)))
