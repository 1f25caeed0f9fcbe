"""A selected folder as an in-memory view.

The session keeps the folder's UIDs, flags and MODSEQs in compact arrays, so
that sequence numbers, FETCH FLAGS and most SEARCH keys need no query. The
view is brought up to date from the store by MODSEQ deltas and Expunged
tombstones (``store.services.folder_changes``); ``apply`` turns a delta into
the untagged responses the client must see, holding expunges back while the
RFC forbids them (RFC 3501 §7.4.1: not during FETCH, STORE and SEARCH), so
that sequence numbers stay consistent. Pure: no I/O.

Views share their arrays until one of them changes (copy on write): ten
thousand sessions in IDLE on one large INBOX hold one copy of it, not ten
thousand. When the same delta reaches views that share their arrays (the
sessions woken by one delivery), the first view to apply it computes the new
arrays and the others adopt them, so the arrays stay shared after the change
too.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from apps.store.models import Flag
from apps.store.services import FolderChanges


@dataclass
class Updates:
    """What a delta changed, in the order it must be told."""

    expunged: list[tuple[int, int]] = field(default_factory=list)  # (seq before removal, uid)
    exists: bool = False
    new_uids: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # UIDs whose flags or MODSEQ changed


class _Applied(NamedTuple):
    """A delta applied to shared arrays: what the views that share them adopt."""

    base: array  # the uids array the delta was applied to (kept: its id is in the key)
    changes: FolderChanges
    uids: array
    flags: array
    modseqs: array
    keywords: dict[int, list[str]]
    updates: Updates


# The latest deltas applied to shared arrays, by (id of the uids array, the
# delta's HIGHESTMODSEQ, whether expunges were told); a few suffice, as the
# sessions one delivery wakes apply it together. Sessions woken apart read the
# delta apart: an equal delta is adopted all the same.
_APPLIED: dict[tuple[int, int, bool], _Applied] = {}
_APPLIED_KEPT = 8


def _ascending(spans: list[range]) -> list[int]:
    """The positions in any of ``spans``, ascending and once each; one span
    (1:*, the usual case) is a list at once, not a set of 100,000 sorted."""
    if len(spans) == 1:
        return list(spans[0])
    positions: set[int] = set()
    for span in spans:
        positions.update(span)
    return sorted(positions)


class FolderView:
    def __init__(self, *, folder_id: int, name: str, uidvalidity: int, readonly: bool) -> None:
        self.folder_id = folder_id
        self.name = name
        self.uidvalidity = uidvalidity
        self.readonly = readonly
        self.uids = array("Q")
        self.flags = array("H")
        self.modseqs = array("Q")
        self.keywords: dict[int, list[str]] = {}
        self.recent: set[int] = set()
        self.highestmodseq = 0
        self.uidnext = 1
        # Tombstones seen but not yet told (RFC 3501 §7.4.1).
        self.pending_expunge: set[int] = set()
        # The arrays and keywords are another view's too: copied before a change.
        self._shared = False

    # --- lookups
    def __len__(self) -> int:
        return len(self.uids)

    def index(self, uid: int) -> int | None:
        position = bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position
        return None

    def flag_names(self, position: int) -> list[str]:
        bits = self.flags[position]
        uid = self.uids[position]
        names = [name for name, bit in Flag.NAMES.items() if bits & bit]
        names += self.keywords.get(uid, [])
        if uid in self.recent:
            names.append("\\Recent")
        return names

    def keywords_in_use(self) -> list[str]:
        return sorted({k for words in self.keywords.values() for k in words})

    def first_unseen(self) -> int | None:
        for position, bits in enumerate(self.flags):
            if not bits & Flag.SEEN:
                return position + 1
        return None

    def seq_positions(self, ranges: list[tuple[int, int]]) -> list[int]:
        """0-based positions for message sequence number ranges (ascending, unique)."""
        count = len(self.uids)
        spans = [range(max(low, 1) - 1, min(high, count)) for low, high in ranges]
        return _ascending(spans)

    def uid_positions(self, ranges: list[tuple[int, int]]) -> list[int]:
        spans = [range(bisect_left(self.uids, low), bisect_left(self.uids, high + 1))
                 for low, high in ranges]
        return _ascending(spans)

    def matched_uid(self, seqs: Iterable[int], uids: Iterable[int]) -> int:
        """RFC 7162 §3.2.5.2 message sequence match data: the largest of the
        client's UIDs, taken in ascending pairs with its sequence numbers up to
        the first pair that no longer matches, whose sequence number still
        holds it. The client knows every expunge up to it (0: none known)."""
        matched = 0
        for seq, uid in zip(seqs, uids, strict=False):
            if not 0 < seq <= len(self.uids) or self.uids[seq - 1] != uid:
                break  # past the folder's end too: a loop bounded by its size
            matched = uid
        return matched

    # --- updates
    def _own(self) -> None:
        """Copies of the shared arrays, before changing them."""
        if self._shared:
            self.uids = array("Q", self.uids)
            self.flags = array("H", self.flags)
            self.modseqs = array("Q", self.modseqs)
            self.keywords = dict(self.keywords)  # the lists are replaced, never changed
            self._shared = False

    def apply(self, changes: FolderChanges, *, allow_expunge: bool,
              recent: tuple[int, int] = (0, 0)) -> Updates:
        if not changes.changed and not changes.expunged and not (
                allow_expunge and self.pending_expunge):
            self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
            self.uidnext = max(self.uidnext, changes.uidnext)
            return Updates()
        shared = self._shared and not self.pending_expunge
        key = (id(self.uids), changes.highestmodseq, allow_expunge)
        applied = _APPLIED.get(key) if shared else None
        if applied is not None and applied.base is self.uids and (
                applied.changes is changes or applied.changes == changes):
            self.uids, self.flags, self.modseqs, self.keywords = (
                applied.uids, applied.flags, applied.modseqs, applied.keywords)
            updates = applied.updates
        else:
            base = self.uids
            self._own()
            updates = self._apply(changes, allow_expunge=allow_expunge)
            if shared and not self.pending_expunge:
                _APPLIED[key] = _Applied(base, changes, self.uids, self.flags, self.modseqs,
                                         self.keywords, updates)
                while len(_APPLIED) > _APPLIED_KEPT:
                    del _APPLIED[next(iter(_APPLIED))]
                self._shared = True
        low, high = recent
        self.recent.difference_update(uid for _seq, uid in updates.expunged)
        self.recent.update(uid for uid in updates.new_uids if low <= uid < high)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        self.uidnext = max(self.uidnext, changes.uidnext)
        return updates

    def _apply(self, changes: FolderChanges, *, allow_expunge: bool) -> Updates:
        """The delta applied to this view's own arrays (not ``recent``)."""
        updates = Updates()
        self.pending_expunge.update(u for u in changes.expunged if self.index(u) is not None)
        if allow_expunge and self.pending_expunge:
            for uid in sorted(self.pending_expunge):
                position = self.index(uid)
                if position is None:
                    continue
                updates.expunged.append((position + 1, uid))
                del self.uids[position]
                del self.flags[position]
                del self.modseqs[position]
                self.keywords.pop(uid, None)
            self.pending_expunge.clear()
        expunged_now = set(changes.expunged)
        last = self.uids[-1] if self.uids else 0
        for uid, bits, words, modseq in changes.changed:
            if uid in self.pending_expunge:
                continue
            if uid > last:
                if uid in expunged_now:
                    continue  # came and went between two looks: never shown
                self.uids.append(uid)
                self.flags.append(bits)
                self.modseqs.append(modseq)
                if words:
                    self.keywords[uid] = list(words)
                updates.new_uids.append(uid)
                last = uid
                continue
            position = self.index(uid)
            if position is None:
                continue  # expunged and already told
            if self.modseqs[position] == modseq:
                continue
            self.flags[position] = bits
            self.modseqs[position] = modseq
            if words:
                self.keywords[uid] = list(words)
            else:
                self.keywords.pop(uid, None)
            updates.changed.append(uid)
        updates.exists = bool(updates.new_uids)
        return updates

    def copy(self, *, name: str, readonly: bool) -> FolderView:
        """The same messages in a view of its own, with nothing recent or
        pending: a new session's starting point (see ``SnapshotCache``)."""
        view = FolderView(folder_id=self.folder_id, name=name, uidvalidity=self.uidvalidity,
                          readonly=readonly)
        view.uids, view.flags, view.modseqs = self.uids, self.flags, self.modseqs
        view.keywords = self.keywords
        view._shared = self._shared = True
        view.highestmodseq = self.highestmodseq
        view.uidnext = self.uidnext
        return view

    def mark_recent(self, low: int, high: int) -> None:
        """UIDs in [low, high) are \\Recent for this session (RFC 3501 §2.3.2)."""
        start, stop = bisect_left(self.uids, low), bisect_left(self.uids, high)
        self.recent.update(self.uids[start:stop])

    def set_flags(self, uid: int, bits: int, words: list[str], modseq: int) -> None:
        """Record a change this session made itself (so it is not told twice)."""
        position = self.index(uid)
        if position is None:
            return
        self._own()
        self.flags[position] = bits
        self.modseqs[position] = max(self.modseqs[position], modseq)
        if words:
            self.keywords[uid] = list(words)
        else:
            self.keywords.pop(uid, None)


class SnapshotCache:
    """The last view of each folder selected in this process, so that the next
    SELECT of a large folder reads only what changed since (by MODSEQ and
    tombstones, as a session's refresh does) instead of every message. Least
    recently used folders are dropped beyond ``size``."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._views: dict[int, FolderView] = {}
        self._keywords: dict[int, set[str]] = {}

    def known_keywords(self, folder_id: int) -> set[str]:
        """The keywords sessions of this process have announced for a folder."""
        return self._keywords.setdefault(folder_id, set())

    def start(self, *, folder_id: int, name: str, uidvalidity: int,
              readonly: bool) -> FolderView:
        """A view to bring up to date: a copy of the snapshot, else empty."""
        cached = self._views.pop(folder_id, None)
        if cached is None or cached.uidvalidity != uidvalidity:
            return FolderView(folder_id=folder_id, name=name, uidvalidity=uidvalidity,
                              readonly=readonly)
        self._views[folder_id] = cached  # most recently used last
        return cached.copy(name=name, readonly=readonly)

    def keep(self, view: FolderView) -> None:
        """Remember ``view`` (up to date, nothing pending) for the next SELECT."""
        self._views.pop(view.folder_id, None)
        self._views[view.folder_id] = view.copy(name=view.name, readonly=True)
        while len(self._views) > self.size:
            dropped = next(iter(self._views))
            del self._views[dropped]
            self._keywords.pop(dropped, None)
