"""IMAP NOTIFY (RFC 5465): events a client asked to hear of at any time.

``check`` turns NOTIFY SET's event groups into a ``Spec``; the functions
after it decide, purely, which STATUS items, LIST and METADATA responses a
change calls for. A ``Notifier`` belongs to one session: it hears of changes
to the mailbox's folders by the same change events as the selected folder
(apps/imap/notify.py watches them across processes), looks at the mailbox's
outline (folder names, subscriptions, annotation entries) once a second when
the client asked for those events, and tells the client whenever the
session is between commands or in IDLE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from apps.imap import responses as fmt
from apps.imap.notify import POLL_SECONDS, news_mark, watcher
from apps.imap.parser import EventGroup
from apps.store import events
from apps.store import services as store
from apps.store.models import Folder
from apps.store.outline import Outline, mailbox_outline
from mailhost.asyncdb import database_sync_to_async

if TYPE_CHECKING:
    from apps.imap.session import IMAPSession

MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange")
MAILBOX_EVENTS = ("MailboxName", "SubscriptionChange", "MailboxMetadataChange")
# No AnnotationChange: Mailhost has no message annotations (RFC 5257).
SUPPORTED = (*MESSAGE_EVENTS, *MAILBOX_EVENTS, "ServerMetadataChange")


class NotifyRefused(Exception):
    """NOTIFY answered BAD (``bad``) or NO with a response code."""

    def __init__(self, text: str, *, bad: bool = False, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.bad = bad
        self.code = code


@dataclass(frozen=True)
class Spec:
    """What the client asked for: the SELECTED / SELECTED-DELAYED group, the
    groups for other mailboxes (folder names decoded)."""

    selected: EventGroup | None
    others: tuple[EventGroup, ...]

    def events_of(self, name: str, subscribed: frozenset[str]) -> set[str]:
        """The events asked for on the folder ``name`` by the groups it falls in."""
        found: set[str] = set()
        for group in self.others:
            if _in_group(group, name, subscribed):
                found.update(group.events)
        return found

    def asks(self, *names: str) -> bool:
        return any(name in group.events for group in self.others for name in names)


def _in_group(group: EventGroup, name: str, subscribed: frozenset[str]) -> bool:
    # RFC 5465 §6.2-6.6. Any folder can receive mail (Sieve files into
    # folders), so INBOXES is PERSONAL, as §6.3 asks when the set is unknown.
    if group.filter in ("PERSONAL", "INBOXES"):
        return True
    if group.filter == "SUBSCRIBED":
        return name in subscribed
    if group.filter == "SUBTREE":
        return any(name == top or name.startswith(top + "/") for top in group.mailboxes)
    return name in group.mailboxes  # MAILBOXES: no wildcards (§6.6)


def check_groups(groups: Sequence[EventGroup], decode: Callable[[str], str]) -> Spec:
    """The groups of NOTIFY SET as a Spec, their folder names decoded, or
    NotifyRefused (RFC 5465 §3.1, §5, §6.1). RFC 5465 §5 asks for BAD when
    MessageNew comes without MessageExpunge or FlagChange without both; like
    Dovecot, a client asking for fewer of them is told of what it asked for."""
    groups = [replace(g, mailboxes=tuple(decode(name) for name in g.mailboxes))
              for g in groups]
    unknown = sorted({e for g in groups for e in g.events if e not in SUPPORTED})
    if unknown:
        # §3.1: an unsupported event is NO, with the list of those supported.
        raise NotifyRefused(f"unsupported event {unknown[0]}",
                            code=f"BADEVENT ({' '.join(SUPPORTED)})")
    selected = [g for g in groups if g.filter.startswith("SELECTED")]
    if len(selected) > 1:
        raise NotifyRefused("SELECTED or SELECTED-DELAYED once at most", bad=True)
    if selected and set(selected[0].events) - set(MESSAGE_EVENTS):
        raise NotifyRefused("only message events apply to the selected folder", bad=True)
    others = tuple(g for g in groups if not g.filter.startswith("SELECTED"))
    if any(g.fetch for g in others):
        raise NotifyRefused("FETCH attributes only with the selected folder", bad=True)
    return Spec(selected[0] if selected else None, others)


def initial_items(events_asked: set[str]) -> list[str]:
    """RFC 5465 §3.1: the STATUS items NOTIFY SET STATUS sends for a folder."""
    items: list[str] = []
    if "MessageNew" in events_asked:
        items += ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
    if "MessageExpunge" in events_asked:
        items += ["MESSAGES"]
    if "FlagChange" in events_asked:
        items += ["UIDVALIDITY", "HIGHESTMODSEQ"]
    return list(dict.fromkeys(items))


WATCHED_ITEMS = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ", "UNSEEN"]


def news_items(events_asked: set[str], before: dict[str, int], now: dict[str, int], *,
               condstore: bool, qresync: bool) -> list[str]:
    """The STATUS items telling of a change of another folder (RFC 5465 §5.1-5.3),
    none when the change is not one the client asked for."""
    if before.get("UIDVALIDITY") != now["UIDVALIDITY"]:
        return ["UIDVALIDITY"] if events_asked else []
    counts = before.get("MESSAGES") != now["MESSAGES"] or \
        before.get("UIDNEXT") != now["UIDNEXT"]
    if counts and {"MessageNew", "MessageExpunge"} & events_asked:
        grew = now["UIDNEXT"] != before.get("UIDNEXT")
        modseq = condstore if grew else qresync
        return ["UIDNEXT", "MESSAGES", *(["HIGHESTMODSEQ"] if modseq else [])]
    if "FlagChange" in events_asked and before.get("HIGHESTMODSEQ") != now["HIGHESTMODSEQ"]:
        if condstore:
            return ["HIGHESTMODSEQ", "UIDVALIDITY"]
        if before.get("UNSEEN") != now["UNSEEN"]:
            return ["UNSEEN"]  # §5.1: MAY, else nothing to tell without CONDSTORE
    return []


def outline_news(spec: Spec, before: Outline, now: Outline,
                 encode: Callable[[str], bytes]) -> list[bytes]:
    """LIST and METADATA responses for what changed between two outlines
    (RFC 5465 §5.4-5.7), in the client's own name encoding."""
    lines: list[bytes] = []
    subscribed = before.subscribed | now.subscribed
    names = set(now.folders.values())

    def listed(name: str, extra: Sequence[str] = (), suffix: bytes = b"") -> bytes:
        attributes = [*extra]
        if name not in names:
            attributes.append("\\NonExistent")
        elif any(other.startswith(name + "/") for other in names):
            attributes.append("\\HasChildren")
        else:
            attributes.append("\\HasNoChildren")
        if name in now.subscribed:
            attributes.append("\\Subscribed")
        return f"LIST ({' '.join(attributes)}) \"/\" ".encode() + encode(name) + suffix

    def wants(event: str, name: str) -> bool:
        return event in spec.events_of(name, subscribed)

    renamed = {name: now.folders[folder_id] for folder_id, name in before.folders.items()
               if now.folders.get(folder_id, name) != name}
    told_renamed: set[str] = set()
    # RFC 5465 §5.4: a created or deleted folder and its direct parent are affected.
    affected: list[str] = []
    for folder_id, name in sorted(before.folders.items()):
        new_name = now.folders.get(folder_id)
        if new_name is None:
            affected.append(name)
        elif new_name != name and (wants("MailboxName", name)
                                   or wants("MailboxName", new_name)):
            # §5.4: the children renamed along are not told of apart.
            if _parent(name) not in told_renamed or \
                    renamed[_parent(name)] != _parent(new_name):
                old = b' ("OLDNAME" (' + encode(name) + b"))"
                lines.append(listed(new_name, suffix=old))
            told_renamed.add(name)
    affected += [name for folder_id, name in sorted(now.folders.items())
                 if folder_id not in before.folders]
    parents = [_parent(name) for name in affected]
    for name in dict.fromkeys([*affected, *parents]):
        if name and name not in renamed and wants("MailboxName", name):
            lines.append(listed(name))
    # RENAME moves the subscriptions of the tree along: told by OLDNAME alone.
    moved = {name for old, new in renamed.items() if old in before.subscribed
             and new in now.subscribed for name in (old, new)}
    for name in sorted((now.subscribed ^ before.subscribed) - moved):
        if wants("SubscriptionChange", name):
            lines.append(listed(name))
    changed: dict[int | None, set[str]] = {}
    for key in set(before.entries) | set(now.entries):
        if before.entries.get(key) != now.entries.get(key):
            changed.setdefault(key[0], set()).add(key[1])
    for folder_id, entries in sorted(changed.items(), key=lambda item: item[0] or 0):
        listing = b" ".join(fmt.astring(entry) for entry in sorted(entries))
        if folder_id is None:
            if spec.asks("ServerMetadataChange"):
                lines.append(b'METADATA "" ' + listing)  # RFC 5464 §4.4.2
        elif (name := now.folders.get(folder_id)) is not None and \
                wants("MailboxMetadataChange", name):
            lines.append(b"METADATA " + encode(name) + b" " + listing)
    return lines


def _parent(name: str) -> str:
    """The folder directly above ``name`` ("" at the top)."""
    return name.rpartition("/")[0]


class Notifier:
    """A session's NOTIFY: changes heard of, and what the client was told."""

    def __init__(self, session: IMAPSession, spec: Spec) -> None:
        self.session = session
        self.spec = spec
        self.woken = False  # news heard, not yet told
        self.pending: set[int] = set()  # folders changed since last told
        self.told: dict[int, dict[str, int]] = {}  # folder id -> STATUS values told
        self.outline: Outline | None = None
        self.watched: set[int] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._looked = 0.0
        self._look_mark = 0  # notify.news_mark() of the outline read last looked at
        self._news = 0  # notify.news_mark() of the latest change heard of

    # --- set-up and tear-down
    async def start(self, *, status: bool) -> None:
        """Hear of the mailbox's changes; with STATUS, tell each folder's state
        now (RFC 5465 §3.1)."""
        session = self.session
        self._unsubscribe = events.subscribe(session.mailbox.pk, self._heard)
        await self._look(tell=False)
        if not status:
            return
        for folder_id, name in sorted(self._folders().items(), key=lambda item: item[1]):
            asked = self._events_of(name)
            if asked & set(MESSAGE_EVENTS) and not self._selected(folder_id):
                items = initial_items(asked)
                values = self.told.get(folder_id, {})
                text = " ".join(f"{item} {values[item]}" for item in items)
                session.untagged(b"STATUS " + session.encode_name(name) + f" ({text})".encode())

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for folder_id in self.watched:
            watcher().unwatch(folder_id)
        self.watched.clear()
        self.woken = True
        self.session.wake()

    # --- hearing of changes
    def _heard(self, event: events.FolderChanged) -> None:
        if not self._selected(event.folder_id):
            self.pending.add(event.folder_id)
            self._news = news_mark()
            self.woken = True
            self.session.wake()

    def _selected(self, folder_id: int) -> bool:
        view = self.session.view
        return view is not None and view.folder_id == folder_id

    def _folders(self) -> dict[int, str]:
        return self.outline.folders if self.outline is not None else {}

    def _events_of(self, name: str) -> set[str]:
        subscribed = self.outline.subscribed if self.outline is not None else frozenset()
        return self.spec.events_of(name, subscribed)

    # --- telling
    async def tell(self, *, idle: bool) -> None:
        """Everything heard of since the last time, between commands or in IDLE.
        The selected folder's news between commands only with a SELECTED
        group (RFC 5465 §3.1), in IDLE always (RFC 2177)."""
        self.woken = False
        session = self.session
        selected = self.spec.selected
        if session.view is not None and session._changed and self.hears_selected(idle):
            # RFC 5465 §6.1.2: SELECTED-DELAYED holds expunges back until a
            # command (or IDLE) allows them.
            updates = await session.refresh(
                allow_expunge=idle or (selected is not None and selected.filter == "SELECTED"))
            if updates is not None and updates.new_uids and selected is not None and \
                    selected.fetch and "MessageNew" in selected.events:
                await session.fetch_new(updates.new_uids, list(selected.fetch))
        # Once in each period of the clock, the same for all sessions, so that
        # those of one mailbox share their look (notify.Watcher.shared).
        if self.keeps_looking() and asyncio.get_running_loop().time() // POLL_SECONDS > \
                self._looked // POLL_SECONDS:
            await self._look(tell=True)
        pending, self.pending = self.pending, set()
        for folder_id in sorted(pending):
            await self._tell_status(folder_id)

    async def _tell_status(self, folder_id: int) -> None:
        name = self._folders().get(folder_id)
        before = self.told.get(folder_id)
        if name is None or before is None or self._selected(folder_id):
            return
        now = await _status(folder_id, self._news)
        if now is None:
            return
        self.told[folder_id] = now
        session = self.session
        items = news_items(self._events_of(name), before, now,
                           condstore=session.condstore, qresync=session.qresync)
        if items:
            text = " ".join(f"{item} {now[item]}" for item in items)
            session.untagged(b"STATUS " + session.encode_name(name) + f" ({text})".encode())

    async def own_change(self) -> None:
        """This session changed folders, subscriptions or annotations itself:
        take the new outline without telling (RFC 5465 §5: the server SHOULD
        NOT tell a client of its own changes)."""
        if self.outline is not None:
            await self._look(tell=False)

    async def _look(self, *, tell: bool) -> None:
        """Read the outline (a read of its own unless telling: a look on the
        clock takes one that started after its last); tell what changed in it
        when asked to, and watch the folders whose message events the client
        wants."""
        self._looked = asyncio.get_running_loop().time()
        spec = self.spec
        mailbox_id = self.session.mailbox.pk
        metadata = spec.asks("MailboxMetadataChange", "ServerMetadataChange")
        self._look_mark, now = await watcher().shared(
            ("outline", mailbox_id, metadata), self._look_mark if tell else news_mark(),
            lambda: database_sync_to_async(mailbox_outline)(
                mailbox_id, subscriptions=True, metadata=metadata))
        if tell and self.outline is not None:
            for line in outline_news(spec, self.outline, now, self.session.encode_name):
                self.session.untagged(line)
        self.outline = now
        wanted = {folder_id for folder_id, name in now.folders.items()
                  if spec.events_of(name, now.subscribed) & set(MESSAGE_EVENTS)}
        for folder_id in sorted(wanted - self.watched):
            values = await _status(folder_id, self._look_mark)
            if values is None:
                continue
            self.told[folder_id] = values
            watcher().watch(self.session.mailbox.pk, folder_id, values["HIGHESTMODSEQ"])
            self.watched.add(folder_id)
        for folder_id in self.watched - wanted:
            watcher().unwatch(folder_id)
            self.told.pop(folder_id, None)
        self.watched &= wanted

    def hears_selected(self, idle: bool) -> bool:
        """Whether news of the selected folder is told now."""
        return idle or bool(self.spec.selected is not None and self.spec.selected.events)

    def keeps_looking(self) -> bool:
        """Whether the outline is looked at on a clock (else only changes wake)."""
        return bool(self.spec.others)


async def _status(folder_id: int, after: int) -> dict[str, int] | None:
    """The folder's WATCHED_ITEMS (None: it is gone), read once for the
    sessions of this loop that heard of the same change (``after``: the mark
    of the asker's news)."""
    _mark, values = await watcher().shared(("status", folder_id), after,
                                           lambda: database_sync_to_async(_read_status)(folder_id))
    return values


def _read_status(folder_id: int) -> dict[str, int] | None:
    with contextlib.suppress(Folder.DoesNotExist):
        return store.folder_status(Folder(pk=folder_id), WATCHED_ITEMS)
    return None
