"""CSV import and export of mailboxes. An import creates each row's mailbox
through the directory service in a transaction of its own, so that a bad row
is reported (line and reason) and the good rows stay created."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db.models import QuerySet

from apps.directory import services
from apps.directory.access import may_manage_address
from apps.directory.audit import Actor
from apps.directory.models import Mailbox, User
from apps.webadmin.directory_forms import MAX_MB, MB
from mailhost.errors import MailhostError

COLUMNS = ["address", "password", "quota_mb", "display_name"]
EXPORT_COLUMNS = ["address", "display_name", "quota_mb", "used_bytes", "active", "created"]
MAX_ROWS = 10_000


@dataclass
class RowResult:
    line: int
    address: str
    ok: bool
    error: str = ""


def _rows(text: str, first_line: int) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text))
    for offset, row in enumerate(reader):
        if not any(cell.strip() for cell in row):
            continue
        if offset == 0 and row and row[0].strip().lower() == "address":
            continue  # the header
        yield first_line + offset, row


def _quota(cell: str) -> int | None:
    cell = cell.strip()
    if not cell:
        return None
    number = int(cell)
    if not 0 <= number <= MAX_MB:
        raise ValueError
    return number * MB


def import_mailboxes(text: str, *, user: User, actor: Actor, first_line: int = 1,
                     ) -> list[RowResult]:
    """Create the mailboxes of ``text`` (CSV, ``COLUMNS``; a header row is
    skipped). ``first_line`` numbers the text's first line, for a file sent
    in parts."""
    results = []
    for line, row in _rows(text, first_line):
        address = row[0].strip() if row else ""
        if len(results) >= MAX_ROWS:
            results.append(RowResult(line, address, False, f"more than {MAX_ROWS} rows"))
            break
        if any("\x00" in cell for cell in row):
            results.append(RowResult(line, address.replace("\x00", ""), False,
                                     "contains a NUL character"))
            continue
        if len(row) < 2 or not row[1]:
            results.append(RowResult(line, address, False, "needs an address and a password"))
            continue
        try:
            quota = _quota(row[2]) if len(row) > 2 else None
        except ValueError:
            results.append(RowResult(line, address, False,
                                     "quota_mb must be a whole number of MB, 0 or more"))
            continue
        if not may_manage_address(user, address):
            results.append(RowResult(line, address, False, "you do not administer its domain"))
            continue
        try:
            services.create_mailbox(address, row[1], quota=quota,
                                    display_name=row[3].strip() if len(row) > 3 else "",
                                    actor=actor)
        except MailhostError as error:
            results.append(RowResult(line, address, False, error.message))
        else:
            results.append(RowResult(line, address, True))
    return results


def _inert(text: str) -> str:
    """A display name (which mailbox users set themselves) that a spreadsheet
    opening the export will not run as a formula (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_rows(mailboxes: QuerySet[Mailbox]) -> Iterable[list[object]]:
    """The rows of a mailbox export, header first; ``mailboxes`` carries
    ``used_bytes`` and its ``user`` (read in chunks, whatever the count)."""
    yield EXPORT_COLUMNS
    for mailbox in mailboxes.iterator(chunk_size=2000):
        yield [mailbox.address, _inert(mailbox.user.display_name), mailbox.quota // MB,
               mailbox.used_bytes, int(mailbox.active), mailbox.created.isoformat()]
