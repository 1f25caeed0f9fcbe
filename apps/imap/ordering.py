"""SORT and THREAD (RFC 5256): base subjects, orderings and threads.

Pure functions over plain values: the session loads the rows (one query) and
formats the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apps.store import mime

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
    # A group's start marker (RFC 3501 §7.4.2: host NIL) counts: its mailbox is
    # the group name, as in Dovecot.
    for address in addresses or ():
        if address[2] is not None:
            return str(address[2]).lower()
    return ""


def _display_name(addresses: list | None) -> str:
    # RFC 5957 §3: the first address's display name (RFC 2047 decoded), or its
    # addr-spec when it has none; compared case-insensitively.
    for address in addresses or ():
        if address[2] is None:
            continue
        name = mime.decode_header_text(address[0] or "").strip()
        if name:
            return name.casefold()
        return (f"{address[2]}@{address[3]}" if address[3] else str(address[2])).casefold()
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
    if criterion in ("DISPLAYFROM", "DISPLAYTO"):
        return _display_name(envelope[2 if criterion == "DISPLAYFROM" else 5])
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


# --- THREAD=REFERENCES (RFC 5256 §3) ----------------------------------------------


@dataclass(eq=False)
class _Node:
    number: int = 0  # 0: a dummy
    row: dict[str, Any] | None = None
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _is_ancestor(node: _Node, of: _Node) -> bool:
    """Whether ``node`` is ``of`` or above it (a link would make a loop)."""
    current: _Node | None = of
    while current is not None:
        if current is node:
            return True
        current = current.parent
    return False


def _is_reply(subject: str) -> bool:
    # RFC 5256 §3: a reply or forward when base subject extraction removes a
    # Re:/Fwd: leader, a "(fwd)" trailer or a [fwd: …] wrapper.
    text = _WSP.sub(" ", subject).strip()
    stripped = _LEADING_BLOB.sub("", text) or text
    return bool(_LEADER.match(text) or _LEADER.match(stripped) or
                re.search(r"\(fwd\)\s*$", text, re.IGNORECASE) or _FWD_WRAP.match(text))


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _date_key(node: _Node) -> tuple[datetime, int]:
    if node.row is None:
        return _date_key(node.children[0]) if node.children else (_EARLIEST, 0)
    return _sent(node.row), node.number


def _sort_tree(nodes: list[_Node]) -> None:
    for node in nodes:
        _sort_tree(node.children)
    nodes.sort(key=_date_key)


def _prune(nodes: list[_Node], *, at_root: bool) -> list[_Node]:
    kept: list[_Node] = []
    for node in nodes:
        node.children = _prune(node.children, at_root=False)
        for child in node.children:
            child.parent = node
        if node.row is not None or (node.children and at_root and len(node.children) > 1):
            kept.append(node)
        else:
            kept.extend(node.children)  # a dummy's children take its place
    return kept


def _thread_subject(node: _Node) -> str:
    source = node if node.row is not None else (node.children[0] if node.children else None)
    if source is None or source.row is None:
        return ""
    return base_subject(source.row["blob__subject"])


def _merge_by_subject(roots: list[_Node]) -> list[_Node]:
    table: dict[str, _Node] = {}
    for node in roots:  # step 5.B
        subject = _thread_subject(node)
        if not subject:
            continue
        known = table.get(subject)
        if known is None or (known.row is not None and (node.row is None or (
                _is_reply(known.row["blob__subject"])
                and not _is_reply(node.row["blob__subject"])))):
            table[subject] = node
    merged: list[_Node] = []
    for node in roots:  # step 5.C
        subject = _thread_subject(node)
        known = table.get(subject) if subject else None
        if known is None or known is node:
            merged.append(node)
            continue
        if known.row is None and node.row is None:
            for child in list(node.children):
                _link(known, child)
        elif known.row is None or (_is_reply(node.row["blob__subject"]) and  # type: ignore[index]
                                   not _is_reply(known.row["blob__subject"])):
            _link(known, node)
        else:
            dummy = _Node()
            position = merged.index(known) if known in merged else None
            for child in (known, node):
                child.parent = None
                _link(dummy, child)
            table[subject] = dummy
            if position is not None:
                merged[position] = dummy
            else:
                roots[roots.index(known)] = dummy
    return merged


def _members(node: _Node) -> str:
    head = [str(node.number)] if node.row is not None else []
    if len(node.children) == 1:
        return " ".join([*head, _members(node.children[0])])
    nested = "".join(f"({_members(child)})" for child in node.children)
    return " ".join([*head, nested]) if head and nested else (nested or " ".join(head))


THREAD_FIELDS = (*SORT_FIELDS, "blob__message_id", "blob__references", "blob__in_reply_to")


def _reference_threads(items: Sequence[tuple[int, dict[str, Any]]]) -> list[_Node]:
    """The sorted roots of THREAD=REFERENCES (RFC 5256 §3) over (number, row) pairs."""
    by_id: dict[str, _Node] = {}
    nodes: list[_Node] = []
    for number, row in sorted(items, key=lambda item: item[0]):
        message_id = row["blob__message_id"]
        node = by_id.get(message_id) if message_id else None
        if node is None or node.row is not None:  # none, or a duplicate: a unique one
            node = _Node()
            if message_id and message_id not in by_id:
                by_id[message_id] = node
        node.number, node.row = number, row
        nodes.append(node)
        refs = list(row["blob__references"] or []) or (
            [row["blob__in_reply_to"]] if row["blob__in_reply_to"] else [])
        previous: _Node | None = None
        for ref in refs:  # step 1.A
            container = by_id.get(ref)
            if container is None:
                container = by_id[ref] = _Node()
                nodes.append(container)
            if previous is not None and container.parent is None and \
                    not _is_ancestor(container, previous):
                _link(previous, container)
            previous = container
        # Step 1.B: an existing parent link goes (it came from a truncated
        # References field); the last reference becomes the parent, unless
        # that would make a loop.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and not _is_ancestor(node, previous):
            _link(previous, node)
    roots = [node for node in dict.fromkeys(nodes) if node.parent is None]  # step 2
    roots = _prune(roots, at_root=True)  # step 3
    for node in roots:
        node.parent = None
    _sort_tree(roots)  # step 4
    roots = _merge_by_subject(roots)  # step 5
    _sort_tree(roots)  # step 6
    return roots


def references(items: Sequence[tuple[int, dict[str, Any]]]) -> str:
    """THREAD=REFERENCES (RFC 5256 §3) in the response syntax of §4."""
    return "".join(f"({_members(node)})" for node in _reference_threads(items))


def reference_threads(
        items: Sequence[tuple[int, dict[str, Any]]]) -> list[list[tuple[int, int]]]:
    """The same threads as ``references``, each as (number, depth) pairs in
    reading order (depth first); dummies are left out, their children keep
    the dummy's depth. The webmail's conversation view uses it."""

    def walk(node: _Node, depth: int, out: list[tuple[int, int]]) -> None:
        if node.row is not None:
            out.append((node.number, depth))
            depth += 1
        for child in node.children:
            walk(child, depth, out)

    threads = []
    for root in _reference_threads(items):
        members: list[tuple[int, int]] = []
        walk(root, 0, members)
        threads.append(members)
    return threads
