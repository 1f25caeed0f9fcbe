"""A page of a folder's message list, and search results, in a constant
number of queries however large the folder is.

The list is one indexed ``LIMIT`` query on (folder, uid): newest first is
UID order backwards, so opening a 100,000-message folder costs what opening
a 10-message one does. The snippet comes from the first bytes of the first
text part, read straight from the blob at the offsets the store parsed at
delivery (never the whole message).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses

from django.db.models import QuerySet
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone

from apps.store import mime
from apps.store.blobs import get_blob_store
from apps.store.models import Flag, Folder, Message, SpecialUse
from apps.webmail.sanitize import html_to_text

PAGE_SIZE = 50
SNIPPET_CHARS = 140
# Enough encoded bytes for SNIPPET_CHARS of text after a typical HTML head.
_SNIPPET_BYTES = 8192

# Sort orders the list offers: (label, ORDER BY). Newest and oldest follow the
# (folder, uid) index; the others sort the folder's rows in the database.
SORTS = {
    "newest": ("Newest first", ("-uid",)),
    "oldest": ("Oldest first", ("uid",)),
    "largest": ("Largest first", ("-size", "-uid")),
    "subject": ("Subject", ("blob__subject", "-uid")),
    "sender": ("Sender", ("blob__from_text", "-uid")),
}
DEFAULT_SORT = "newest"
_FIELDS = ("pk", "uid", "flags", "size", "internal_date", "folder_id", "blob_id",
           "blob__subject", "blob__from_text", "blob__to_text", "blob__bodystructure")


@dataclass(frozen=True)
class Row:
    pk: int
    uid: int
    folder_id: int
    correspondent: str  # the sender; the recipients in Sent and Drafts
    subject: str
    snippet: str
    date: datetime
    size: int
    seen: bool
    flagged: bool
    answered: bool
    attachment: bool

    url: str
    date_label: str  # today's mail by time, this year's by day, older with the year
    size_label: str


def _date_label(value: datetime, now: datetime) -> str:
    local = timezone.localtime(value)
    if local.date() == now.date():
        return local.strftime("%H:%M")
    if local.year == now.year:
        return f"{local.day} {local.strftime('%b')}"
    return f"{local.day} {local.strftime('%b %Y')}"


def _names(header_text: str) -> str:
    people = [name or address for name, address in getaddresses([header_text]) if name or address]
    return ", ".join(people) or header_text


def _first_text_part(structure: dict) -> dict | None:
    parts = [part for _section, part in mime.leaf_parts(structure)
             if part["type"] == "text" and not mime.is_attachment(part)]
    plain = [part for part in parts if part["subtype"] == "plain"]
    return (plain or parts or [None])[0]


def snippet(blob_id: str, structure: dict) -> str:
    """The first words of a message's text, from a bounded read of its blob."""
    part = _first_text_part(structure)
    if part is None:
        return ""
    start = part["body_start"]
    length = min(part["body_end"] - start, _SNIPPET_BYTES)
    try:
        data = get_blob_store().read_range(blob_id, start, length)
    except OSError:
        return ""
    decoded = mime.decode_body(data, part["encoding"]) or data
    charset = next((v for k, v in part["params"] if k == "charset"), "utf-8")
    try:
        text = decoded.decode(charset, "replace")
    except LookupError:
        text = decoded.decode("utf-8", "replace")
    if part["subtype"] == "html":
        text = html_to_text(text)
    # Quoted lines and blank space say nothing new in a one-line preview.
    lines = (line.strip() for line in text.splitlines())
    words = " ".join(line for line in lines if line and not line.startswith(">"))
    return " ".join(words.split())[:SNIPPET_CHARS]


def rows(query: QuerySet[Message], folders: dict[int, Folder]) -> list[Row]:
    """List rows for messages (one query; ``query`` already sliced)."""
    out = []
    now = timezone.localtime()
    # Labels and URLs made here, once per row: a template filter or {% url %}
    # per row would be most of a page's time.
    base = reverse("webmail:message", args=[0]).removesuffix("0/")
    for r in query.values(*_FIELDS):
        folder = folders.get(r["folder_id"])
        outgoing = folder is not None and folder.special_use in (SpecialUse.SENT,
                                                                 SpecialUse.DRAFTS)
        people = r["blob__to_text"] if outgoing else r["blob__from_text"]
        structure = r["blob__bodystructure"]
        out.append(Row(
            pk=r["pk"], uid=r["uid"], folder_id=r["folder_id"],
            correspondent=_names(people) or "(nobody)",
            subject=r["blob__subject"] or "(no subject)",
            snippet=snippet(r["blob_id"], structure), date=r["internal_date"],
            size=r["size"], seen=bool(r["flags"] & Flag.SEEN),
            flagged=bool(r["flags"] & Flag.FLAGGED),
            answered=bool(r["flags"] & Flag.ANSWERED),
            attachment=mime.has_attachment(structure), url=f"{base}{r['pk']}/",
            date_label=_date_label(r["internal_date"], now),
            size_label=filesizeformat(r["size"])))
    return out


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    number: int
    pages: int
    total: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_of(folder: Folder, *, page: int = 1, sort: str = DEFAULT_SORT) -> Page:
    """One page of a folder; the total comes from the folder row's counter."""
    total = folder.message_count
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(max(1, page), pages)
    order = SORTS.get(sort, SORTS[DEFAULT_SORT])[1]
    start = (number - 1) * PAGE_SIZE
    query = Message.objects.filter(folder=folder).order_by(*order)[start:start + PAGE_SIZE]
    return Page(rows(query, {folder.pk: folder}), number, pages, total)


def page_number_of(message: Message, sort: str = DEFAULT_SORT) -> int:
    """The page of the default order on which a message is listed."""
    if sort not in ("newest", "oldest"):
        return 1
    newer = Message.objects.filter(folder_id=message.folder_id)
    if sort == "newest":
        newer = newer.filter(uid__gt=message.uid)
    else:
        newer = newer.filter(uid__lt=message.uid)
    return newer.count() // PAGE_SIZE + 1


def neighbours(message: Message) -> tuple[int | None, int | None]:
    """The ids of the next newer and next older message of the folder (k/j)."""
    base = Message.objects.filter(folder_id=message.folder_id)
    newer = base.filter(uid__gt=message.uid).order_by("uid").values_list("pk", flat=True)
    older = base.filter(uid__lt=message.uid).order_by("-uid").values_list("pk", flat=True)
    return newer.first(), older.first()
