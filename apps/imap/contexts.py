"""Search contexts (RFC 5267 CONTEXT=SEARCH and CONTEXT=SORT).

PARTIAL picks a range out of a SEARCH or SORT result. UPDATE keeps a
search's result in the session: as messages arrive, change flags or go away,
the client is told what joined and what left the result with ESEARCH ADDTO
and REMOVEFROM, until CANCELUPDATE or the folder is left (RFC 5267 §4.3).
A SEARCH context is told in mailbox order at context position 0; a SORT
context is told at the positions of its sorted result. Pure: the session
evaluates the searches and hands the results in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from apps.imap.parser import FetchAtt, SearchKey, SeqSet
from apps.imap.view import FolderView

# RFC 5267 §4.3.1: at least one per client; more are refused with NOUPDATE.
MAX_CONTEXTS = 16


def sequence_set(numbers: Iterable[int]) -> str:
    """Compact sequence-set text for numbers in the order given ("1:3,7"; "5,3:4"):
    ranges only where the numbers ascend (RFC 5267 §3.2)."""
    pieces: list[str] = []
    start = previous = None
    for number in numbers:
        if start is None:
            start = previous = number
        elif number == previous + 1:
            previous = number
        else:
            pieces.append(f"{start}" if start == previous else f"{start}:{previous}")
            start = previous = number
    if start is not None:
        pieces.append(f"{start}" if start == previous else f"{start}:{previous}")
    return ",".join(pieces)


def partial(numbers: Sequence[int], low: int, high: int) -> str:
    """RFC 5267 §4.4 ret-data-partial: the requested range (low ≤ high, 1 is the
    first result) and the results in it, NIL when there are none."""
    chosen = numbers[low - 1:high]
    return f"PARTIAL ({low}:{high} {sequence_set(chosen) if chosen else 'NIL'})"


def _uid_key(uids: Iterable[int]) -> SearchKey:
    ranges: list[tuple[int | None, int | None]] = []
    for uid in sorted(uids):
        if ranges and ranges[-1][1] == uid - 1:
            ranges[-1] = (ranges[-1][0], uid)
        else:
            ranges.append((uid, uid))
    return SearchKey("UID", (SeqSet(tuple(ranges)),))


def pin_numbers(key: SearchKey, view: FolderView, saved: Sequence[int]) -> SearchKey:
    """The search program with its message sequence numbers and "$" replaced by
    the UIDs they name now: RFC 5267 §4.3, they are evaluated when the command
    is received, and a later change to them is not a change of the result."""
    if key.op in ("SEQ", "UID") and key.args[0].saved:
        return _uid_key(saved)
    if key.op == "SEQ":
        ranges = [(low, min(high, len(view))) for low, high in key.args[0].resolve(len(view))]
        return _uid_key(view.uids[p] for p in view.seq_positions(
            [(low, high) for low, high in ranges if low <= high]))
    if key.op in ("AND", "OR", "NOT"):
        return SearchKey(key.op, tuple(pin_numbers(k, view, saved) if isinstance(k, SearchKey)
                                       else k for k in key.args))
    return key


@dataclass
class Context:
    """One UPDATE context: the search (numbers pinned) and its result as UIDs,
    in the requested order (mailbox order for SEARCH, sorted for SORT)."""

    tag: str
    key: SearchKey
    uid: bool
    result: list[int]
    criteria: list[tuple[str, bool]] | None = None  # SORT's, None for SEARCH
    charset: str = "UTF-8"
    fetch: tuple[FetchAtt, ...] = ()  # RFC 5465 §7: FETCH of new messages joining


@dataclass
class Contexts:
    """A session's UPDATE contexts, by the tag of their searching command."""

    by_tag: dict[str, Context] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_tag)

    def clear(self) -> None:
        self.by_tag.clear()

    def cancel(self, tags: Iterable[str]) -> None:
        for tag in tags:
            self.by_tag.pop(tag, None)

    def expunged(self, view: FolderView, gone: Sequence[tuple[int, int]]) -> list[str]:
        """REMOVEFROM for results expunged, to be sent before the EXPUNGEs
        (RFC 5267 §4.3.4: their sequence numbers must still be valid). ``gone``
        is the view's list of (sequence number when told, UID), ascending."""
        # Each number is told after those before it are removed: the
        # sequence number before any removal is that plus the ones before.
        before = {uid: seq + index for index, (seq, uid) in enumerate(gone)}
        lines = []
        for context in self.by_tag.values():
            removed = [uid for uid in context.result if uid in before]
            if removed:
                numbers = removed if context.uid else [before[uid] for uid in removed]
                lines.append(_esearch(context, [("REMOVEFROM", self._pairs(
                    context, removed, numbers))]))
                gone_now = set(removed)
                context.result = [uid for uid in context.result if uid not in gone_now]
        return lines

    def changed(self, context: Context, view: FolderView, result: Sequence[int]) -> str | None:
        """The ESEARCH telling how ``context``'s result became ``result`` (its
        UIDs in the requested order), or None when nothing changed. The sort
        keys (RFC 5256 §3) are parts of the message that never change, so a
        message in both keeps its place among the others."""
        now = set(result)
        old = set(context.result)
        removed = [uid for uid in context.result if uid not in now]
        added = [uid for uid in result if uid not in old]
        items = []
        if removed:
            numbers = removed if context.uid else [view.index(uid) + 1 for uid in removed]
            items.append(("REMOVEFROM", self._pairs(context, removed, numbers)))
        if added:
            numbers = added if context.uid else [view.index(uid) + 1 for uid in added]
            items.append(("ADDTO", self._pairs(context, added, numbers, result)))
        context.result = list(result)
        return _esearch(context, items) if items else None

    @staticmethod
    def _pairs(context: Context, uids: Sequence[int], numbers: Sequence[int],
               result: Sequence[int] | None = None) -> str:
        """context-position / sequence-set pairs. SEARCH: position 0, the
        numbers in mailbox order (RFC 5267 §4.3.3). SORT: for REMOVEFROM each
        item at its place in the result as it shrinks, for ADDTO at its place
        in the new result, in order, so that the client's copy stays sorted."""
        if context.criteria is None:
            return f"0 {sequence_set(sorted(numbers))}"
        if result is None:
            current = list(context.result)
            pairs = []
            for uid, number in zip(uids, numbers, strict=True):
                place = current.index(uid)
                pairs.append(f"{place + 1} {number}")
                del current[place]
            return " ".join(pairs)
        place = {uid: index for index, uid in enumerate(result)}
        return " ".join(f"{place[uid] + 1} {number}"
                        for uid, number in sorted(zip(uids, numbers, strict=True),
                                                  key=lambda pair: place[pair[0]]))


def _esearch(context: Context, items: list[tuple[str, str]]) -> str:
    uid = " UID" if context.uid else ""
    return f'ESEARCH (TAG "{context.tag}"){uid} ' + " ".join(
        f"{name} ({pairs})" for name, pairs in items)
