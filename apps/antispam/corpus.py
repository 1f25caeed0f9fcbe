"""Messages as operators have them in files (pure functions, plus a reader)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from apps.store.mime import with_crlf


def message_from_file_bytes(raw: bytes) -> bytes:
    """An mbox ``From `` envelope line dropped and line ends made CRLF, as
    the message would arrive over SMTP."""
    if raw.startswith(b"From "):
        raw = raw.partition(b"\n")[2]
    return with_crlf(raw)


def read_messages(directory: Path) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under ``directory``, in name order."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        yield path, message_from_file_bytes(path.read_bytes())


def is_held_out(file_name: str, percent: int = 25) -> bool:
    """A deterministic evaluation split: by a hash of the file name, never by
    what the file contains, so the split cannot be tuned."""
    digest = hashlib.sha256(file_name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent
