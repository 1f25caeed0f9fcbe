"""SORT and THREAD=ORDEREDSUBJECT (RFC 5256): base subjects and orderings.

Pure functions over plain values: the session loads the rows (one query) and
formats the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

_WSP = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:\s*", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the subject without Re:/Fwd: leaders, [blob] prefixes,
    (fwd) trailers and [fwd: …] wrappers, whitespace collapsed."""
    text = _WSP.sub(" ", subject).strip()
    while True:
        text = _TRAILER.sub("", text)  # step 2
        while True:  # steps 3 and 4
            stripped = _LEADER.sub("", text, count=1)
            if stripped == text:
                candidate = _LEADING_BLOB.sub("", text, count=1)
                # A blob is removed only if something remains (step 4).
                stripped = candidate if candidate else text
            if stripped == text:
                break
            text = stripped
        match = _FWD_WRAP.match(text)  # step 6
        if match is None:
            return text.strip().upper()
        text = match.group(1).strip()


def _first_mailbox(addresses: list | None) -> str:
    # RFC 5256 §3: the addr-mailbox of the first address, compared case-insensitively.
    for address in addresses or ():
        if address[2] is not None and address[3] is not None:
            return str(address[2]).lower()
    return ""


def _sent(row: dict[str, Any]) -> datetime:
    # RFC 5256 §3: DATE is the Date: header, or the internal date without one.
    return row["blob__sent_date"] or row["internal_date"]


SORT_FIELDS = ("internal_date", "size", "blob__subject", "blob__sent_date", "blob__envelope")


def _key(criterion: str, row: dict[str, Any]) -> Any:
    if criterion == "ARRIVAL":
        return row["internal_date"]
    if criterion == "DATE":
        return _sent(row)
    if criterion == "SIZE":
        return row["size"]
    if criterion == "SUBJECT":
        return base_subject(row["blob__subject"])
    envelope = row["blob__envelope"]
    return _first_mailbox(envelope[{"FROM": 2, "TO": 5, "CC": 6}[criterion]])


def sort(items: Sequence[tuple[int, dict[str, Any]]],
         criteria: Sequence[tuple[str, bool]]) -> list[int]:
    """Numbers of (number, row) pairs in SORT order; ties keep number order."""
    ordered = sorted(items, key=lambda item: item[0])
    for criterion, reverse in reversed(criteria):
        ordered.sort(key=lambda item, c=criterion: _key(c, item[1]), reverse=reverse)
    return [number for number, _row in ordered]


def ordered_subject(items: Sequence[tuple[int, dict[str, Any]]]) -> str:
    """THREAD=ORDEREDSUBJECT (RFC 5256 §3) in the response syntax of §4."""
    threads: dict[str, list[tuple[datetime, int]]] = {}
    for number, row in items:
        threads.setdefault(base_subject(row["blob__subject"]), []).append(
            (_sent(row), number))
    roots = sorted((sorted(members) for members in threads.values()), key=lambda m: m[0])
    out = []
    for members in roots:
        numbers = [number for _date, number in members]
        if len(numbers) <= 2:
            out.append("(" + " ".join(map(str, numbers)) + ")")
        else:
            out.append(f"({numbers[0]} " + "".join(f"({n})" for n in numbers[1:]) + ")")
    return "".join(out)
