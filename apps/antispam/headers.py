"""Header fields of a raw message: read and rewrite them (pure functions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses


def strip_fields(data: bytes, unwanted: Callable[[str, bytes], bool]) -> bytes:
    """``data`` without the header fields (with their folded lines) for which
    ``unwanted(lower-case name, raw value)`` is true; the body is untouched.
    ``data`` itself when no field is unwanted."""
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[:end + 2], data[end + 2:])
    kept: list[bytes] = []
    dropping = dropped = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, _, value = line.partition(b":")
        dropping = unwanted(name.strip().decode("latin-1").lower(), value)
        dropped = dropped or dropping
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest if dropped else data


def insert_after_first_field(data: bytes, fields: bytes) -> bytes:
    """Put ``fields`` below the first header field (our Received), where
    receivers conventionally add Authentication-Results under their trace."""
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return data + b"\r\n" + fields
        position = end + 2
        if data[position:position + 1] not in (b" ", b"\t"):
            return data[:position] + fields + data[position:]


@dataclass(frozen=True)
class HeaderFacts:
    from_domains: list[str]  # RFC 5322.From domains, lower case
    has_date: bool
    has_message_id: bool


def header_facts(data: bytes) -> HeaderFacts:
    # The header block alone: the parser would read (and keep) the body too.
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
    from_values = [str(v) for v in headers.get_all("From") or []]
    domains = [address.rpartition("@")[2].lower().strip(".")
               for _, address in getaddresses(from_values) if address]
    return HeaderFacts(
        from_domains=domains,
        has_date=headers.get("Date") is not None,
        has_message_id=headers.get("Message-ID") is not None,
    )
