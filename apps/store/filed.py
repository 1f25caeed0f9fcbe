"""A filed message's bytes and structure, as every reader serves them.

A message is its blob with ``Message.added_headers`` (the fields added at
filing: Authentication-Results, X-Spam-*) inserted at ``Message.added_at``,
below our Received field, so that a spooled blob is filed without a second
copy. The blob's cached structure has offsets into the blob; readers get them
moved past the inserted block (``mime.with_fields_inserted``), so that IMAP
sections, partial FETCH, POP3 and the webmail see the message byte for byte
as if it had been stored whole. IMAP, POP3, the webmail and search read
through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from apps.store import mime
from apps.store.blobs import get_blob_store
from apps.store.models import Message

# What a row of ``Message.values(...)`` needs to be read as filed.
FIELDS = ("added_headers", "added_at")


def message_bytes(blob_id: str, added_headers: bytes = b"", added_at: int = 0) -> bytes:
    """The message as filed: its blob with the added header fields in place."""
    data = get_blob_store().read(blob_id)
    if not added_headers:
        return data
    return b"".join((data[:added_at], added_headers, data[added_at:]))


def message_prefix(blob_id: str, added_headers: bytes, added_at: int, length: int) -> bytes:
    """The first ``length`` bytes of the message as filed, from a ranged read
    of its blob: a header or the start of a large message without reading
    (or, from S3, fetching) the rest."""
    inserted = len(added_headers)
    if not added_headers or length <= added_at:
        return get_blob_store().read_range(blob_id, 0, length)
    head = get_blob_store().read_range(blob_id, 0, max(length - inserted, added_at))
    return b"".join((head[:added_at], added_headers, head[added_at:]))[:length]


def message_structure(structure: dict, added_headers: bytes, added_at: int) -> dict:
    """The blob's cached BODYSTRUCTURE tree with offsets into the message."""
    return mime.with_fields_inserted(structure, added_at, len(added_headers))


def as_filed(rows: Iterable[dict]) -> None:
    """Rows of ``Message.values(...)`` that hold ``FIELDS``: make
    ``added_headers`` bytes (PostgreSQL gives a memoryview) and move
    ``blob__bodystructure``, when the row has it, to the message's offsets.
    In place."""
    for row in rows:
        added = row["added_headers"] = bytes(row["added_headers"])
        if added and row.get("blob__bodystructure"):
            row["blob__bodystructure"] = message_structure(
                row["blob__bodystructure"], added, row["added_at"])


def read_bytes(rows: Iterable[dict],
               prefix: Callable[[dict], int | None] | None = None) -> None:
    """Put each row's message bytes in ``row["raw"]`` (rows from ``as_filed``):
    the whole message, or only as many leading bytes as ``prefix(row)`` says
    (None: all)."""
    rows = list(rows)
    reads = []
    for row in rows:
        length = prefix(row) if prefix is not None else None
        arguments = (row["blob_id"], row["added_headers"], row["added_at"])
        reads.append(partial(message_bytes, *arguments) if length is None
                     else partial(message_prefix, *arguments, length))
    for row, raw in zip(rows, get_blob_store().read_concurrently(reads), strict=True):
        row["raw"] = raw


def read_message(message: Message) -> bytes:
    """A message's bytes as filed (one Message row; ``message_bytes`` for rows)."""
    return message_bytes(message.blob_id, bytes(message.added_headers), message.added_at)


def structure_of(message: Message) -> dict:
    """A message's BODYSTRUCTURE tree with offsets into ``read_message``."""
    return message_structure(message.blob.bodystructure, bytes(message.added_headers),
                             message.added_at)
