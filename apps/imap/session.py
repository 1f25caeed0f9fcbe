"""One IMAP connection: the state machine and its command handlers.

Connection state (TLS, login, enabled extensions) lives on the session; the
selected folder is a ``FolderView``. Handlers parse nothing themselves (the
parser did), call store services through ``database_sync_to_async`` (one
batched round trip each) and format with ``responses``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import itertools
import logging
import re
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.directory.services import aauthenticate, plaintext_auth_allowed
from apps.imap import ordering
from apps.imap import responses as fmt
from apps.imap import search as searching
from apps.imap.binary import UnknownEncoding, binary_section, encode_binary_parts
from apps.imap.contexts import MAX_CONTEXTS, Context, Contexts, partial, pin_numbers
from apps.imap.contexts import sequence_set as _uid_set
from apps.imap.notifications import Notifier, NotifyRefused, check_groups
from apps.imap.notify import POLL_SECONDS, news_mark, watcher
from apps.imap.parser import (
    Command,
    CommandFramer,
    Continue,
    FetchAtt,
    ImapUrl,
    LimitError,
    ParseError,
    SearchKey,
    SeqSet,
    TooBig,
    parse_command,
    parse_imap_url,
)
from apps.imap.urlauth import MECHANISM as URLAUTH_MECHANISM
from apps.imap.urlauth import parse_auth_url
from apps.imap.view import FolderView, SnapshotCache, Updates
from apps.store import events, filed, metadata, mime, urlauth
from apps.store import services as store
from apps.store.batching import committer, run_store_call
from apps.store.models import Flag, Folder, SpecialUse
from apps.store.services import FolderChanges
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import Invalid, MailhostError, NotFound, OverQuota

log = logging.getLogger("mailhost.imap")

OUTPUT_FLUSH_SIZE = 64 * 1024
# A session's ``_news_modseq`` when it must read its folder whatever the MODSEQ.
LOOK_AGAIN = sys.maxsize

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-auth", "auth", "selected", "logout"
ANY = {NOT_AUTHENTICATED, AUTHENTICATED, SELECTED}
AUTHED = {AUTHENTICATED, SELECTED}

# The folders last selected in this process: SELECT reads only their changes.
SNAPSHOTS = SnapshotCache()
SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
FETCH_BATCH = 200
# FETCH responses formatted from the view alone, per write (about 40 bytes each).
FETCH_VIEW_BATCH = 5000


class No(Exception):
    """A tagged NO with an optional response code (RFC 3501 §7.1.2)."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(No):
    """A tagged BAD."""


def _sync(func: Callable[..., Any]) -> Callable[..., Any]:
    return database_sync_to_async(func)


def _flag_bits(names: Sequence[str]) -> tuple[int, list[str]]:
    bits = 0
    keywords: list[str] = []
    for name in names:
        bit = Flag.NAMES.get(name)
        if bit is not None:
            bits |= bit
        elif name.startswith("\\"):
            if name in ("\\Recent", "\\*"):
                continue  # RFC 3501 §2.3.2: \Recent cannot be stored
            raise Bad(f"{name} is not a flag that can be stored")
        else:
            keywords.append(name)
    return bits, keywords


class IMAPSession(asyncio.Protocol):
    def __init__(self, tls_context: ssl.SSLContext | None, listener: str,
                 implicit_tls: bool) -> None:
        self.tls_context = tls_context
        self.listener = listener
        self.tls = implicit_tls
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.state = NOT_AUTHENTICATED
        self.mailbox: Any = None
        self.view: FolderView | None = None
        self.framer = CommandFramer(max_line=settings.MAILHOST_IMAP_MAX_LINE,
                                    max_literal=settings.MAILHOST_IMAP_MAX_LITERAL)
        self.condstore = False
        self.qresync = False
        self.utf8 = False
        self.rev2 = False  # RFC 9051 semantics, after ENABLE IMAP4rev2
        self.saved: list[int] = []  # SEARCHRES "$" (RFC 5182), as UIDs
        self.contexts = Contexts()  # RFC 5267 searches kept up to date
        self.notifier: Notifier | None = None  # RFC 5465 NOTIFY
        # Keywords the client was told of in FLAGS since SELECT (RFC 3501 §7.2.6).
        self.keywords_told: set[str] = set()
        self.bad_commands = 0
        self.commands_before_auth = 0
        self._data = asyncio.Event()
        # Plain flags and futures made only when waited on, rather than
        # asyncio.Events (each with a deque of its own): memory per connection.
        self._changed = False  # a change event since the view was last brought up to date
        # What an IDLE waits on: data or a change resolves it (``wake``). A
        # bare future, so that waking ten thousand idlers makes no tasks.
        self._idle_waiter: asyncio.Future[None] | None = None
        self._news = 0  # notify.news_mark() of the latest change event
        # The highest MODSEQ the change events since the last look announced
        # (LOOK_AGAIN: look whatever the MODSEQ, as NOOP asks).
        self._news_modseq = 0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._busy = False
        self.idling = False
        self._idle_together = False  # in IDLE, told of news by the watcher (notify.py)
        self._compressor: Any = None
        self._decompressor: Any = None
        # Response lines written in one turn of the event loop leave in one
        # send: a SELECT's or a FETCH's lines are one system call, not dozens.
        self._output: list[bytes] = []
        self._output_size = 0
        self._flush_scheduled = False

    # --- transport -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._task is not None:
            return  # STARTTLS hands us the TLS transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = str(peer[0])
        log.info("connect listener=%s peer=%s", self.listener, self.peer)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        if self._decompressor is not None:
            try:
                data = self._decompressor.decompress(data)
            except Exception:
                self._close()
                return
        self.framer.feed(data)
        self._data.set()
        self.wake()
        if self.framer.buffered() > 4 * settings.MAILHOST_IMAP_MAX_LINE and \
                self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._closed = True
        self._data.set()
        self.wake()
        return None

    def connection_lost(self, error: Exception | None) -> None:
        self._closed = True
        self._data.set()
        self.resume_writing()
        self._changed = True
        self._news_modseq = LOOK_AGAIN
        self.wake()
        log.info("disconnect listener=%s peer=%s", self.listener, self.peer)

    def wake(self) -> None:
        if self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def request_shutdown(self) -> None:
        if (self._busy and not self.idling) or self.transport is None:
            return
        self._write(b"* BYE server shutting down\r\n")
        self._close()

    def _close(self) -> None:
        self._flush()
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is None or self._closed:
            return
        if self._compressor is not None:
            import zlib

            data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self._output.append(data)
        self._output_size += len(data)
        if self._output_size >= OUTPUT_FLUSH_SIZE:
            self._flush()  # the transport's flow control (``_drain``) sees it now
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hand what was written so far to the transport."""
        self._flush_scheduled = False
        if not self._output:
            return
        data = b"".join(self._output)
        self._output.clear()
        self._output_size = 0
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    async def _drain(self) -> None:
        while self._write_paused and not self._closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def untagged(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self._write(b"* " + line + b"\r\n")

    # --- reading ---------------------------------------------------------------
    async def _wait_data(self) -> None:
        self._data.clear()
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
        if self.notifier is None or self._busy:
            await asyncio.wait_for(self._data.wait(), settings.MAILHOST_IMAP_TIMEOUT)
            return
        await self.listen(self._data, idle=False)

    async def listen(self, until: asyncio.Event, *, idle: bool) -> None:
        """Wait for ``until`` (data from the client); meanwhile tell what NOTIFY
        asked for, as it happens (RFC 5465 §3.1: the client listens at all
        times). TimeoutError when the client stays silent too long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.MAILHOST_IMAP_TIMEOUT
        while not until.is_set() and not self._closed:
            notifier = self.notifier
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            hears = self.view is not None and (
                notifier.hears_selected(idle) if notifier else idle)
            if not (notifier is not None and notifier.woken) and not (
                    hears and self._changed):
                ticking = notifier is not None and notifier.keeps_looking()
                # One plain future that data, a change or the notifier resolves
                # (``wake``): no task per wait for thousands of listeners.
                waiter = self._idle_waiter = loop.create_future()
                try:
                    with contextlib.suppress(TimeoutError):
                        # On the clock's period boundaries (Notifier.tell).
                        tick = POLL_SECONDS - loop.time() % POLL_SECONDS
                        await asyncio.wait_for(waiter, min(left, tick) if ticking else left)
                finally:
                    self._idle_waiter = None
            if until.is_set() or self._closed:
                return
            if notifier is not None:
                await notifier.tell(idle=idle)
            elif self._changed:
                await self.refresh(allow_expunge=True)

    async def fetch_new(self, uids: Sequence[int], atts: list[FetchAtt]) -> None:
        """RFC 5465 §5.2: the FETCH attributes NOTIFY asked for, of new messages."""
        ranges = tuple((uid, uid) for uid in uids)
        await _fetch(self, Command("*", "UID FETCH", {
            "seqs": SeqSet(ranges), "atts": atts, "modifiers": {}}), uid=True)

    async def _read_line(self) -> bytes:
        while True:
            line = self.framer.read_line()
            if line is not None:
                return line
            if self._closed:
                raise ConnectionError("closed")
            await self._wait_data()

    async def _run(self) -> None:
        try:
            self.untagged(f"OK [CAPABILITY {self.capabilities()}] Mailhost IMAP4rev1 ready")
            while not self._closed and self.state != LOGOUT:
                try:
                    item = self.framer.next()
                except TooBig as error:
                    self._tagged(error.tag or "*", f"NO [TOOBIG] {error.message}")
                    continue
                except LimitError as error:
                    self.untagged(f"BYE {error.message}")
                    break
                if item is None:
                    if self._closed:
                        break
                    await self._wait_data()
                    continue
                if isinstance(item, Continue):
                    self._write(b"+ go ahead\r\n")
                    continue
                await self._handle(item)
                await self._drain()
        except TimeoutError:
            self.untagged("BYE autologout; idle for too long")
        except ConnectionError:
            pass
        except Exception:
            log.exception("IMAP session failed peer=%s", self.peer)
            self.untagged("BYE internal server error")
        finally:
            if self.notifier is not None:
                self.notifier.stop()
            self._leave_folder()
            self._close()

    def _tagged(self, tag: str, text: str) -> None:
        self._write(f"{tag} {text}\r\n".encode())

    async def _handle(self, raw: bytes) -> None:
        try:
            command = parse_command(raw)
        except ParseError as error:
            self._bad(error.tag or "*", error.message)
            return
        entry = COMMANDS.get(command.name)
        assert entry is not None  # the parser knows the same names
        handler, states = entry
        if self.state not in states:
            self._bad(command.tag, f"{command.name} is not allowed now")
            return
        if self.state == NOT_AUTHENTICATED:
            self.commands_before_auth += 1
            if self.commands_before_auth > settings.MAILHOST_IMAP_MAX_COMMANDS_BEFORE_AUTH:
                self.untagged("BYE too many commands before login")
                self._close()
                return
        self._busy = True
        try:
            result = await handler(self, command)
        except _AlreadyAnswered:
            return
        except Bad as error:
            self._bad(command.tag, error.text)
            return
        except No as error:
            code = f"[{error.code}] " if error.code else ""
            await self._unsolicited(command)
            self._tagged(command.tag, f"NO {code}{error.text}")
            return
        except MailhostError as error:
            code = {"over_quota": "[OVERQUOTA] ", "not_found": "[NONEXISTENT] ",
                    "conflict": "[ALREADYEXISTS] ", "invalid": "[CANNOT] ",
                    "limit_exceeded": "[LIMIT] "}.get(error.code, "")
            self._tagged(command.tag, f"NO {code}{error.message}")
            return
        finally:
            self._busy = False
        if self.state == LOGOUT:
            self._tagged(command.tag, result or "OK LOGOUT completed")
            return
        if self.notifier is not None and command.name in _OUTLINE_COMMANDS:
            await self.notifier.own_change()
        await self._unsolicited(command)
        self._tagged(command.tag, result or f"OK {command.name} completed")

    def _bad(self, tag: str, text: str) -> None:
        self.bad_commands += 1
        self._tagged(tag, f"BAD {text}")
        if self.bad_commands > settings.MAILHOST_IMAP_MAX_BAD_COMMANDS:
            self.untagged("BYE too many bad commands")
            self._close()

    # --- capabilities ----------------------------------------------------------
    def plaintext_allowed(self) -> bool:
        # RFC 3501 §6.2.3 / RFC 8314: no passwords in the clear, except from the
        # host itself (when the setting allows it).
        return plaintext_auth_allowed(tls=self.tls, remote_ip=self.peer)

    def capabilities(self) -> str:
        base = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
                "NAMESPACE"]
        caps = [*base,
                "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
                "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH",
                "SEARCHRES", "CONDSTORE", "QRESYNC", "QUOTA", "QUOTA=RES-STORAGE",
                "STATUS=SIZE", f"APPENDLIMIT={settings.MAILHOST_IMAP_MAX_LITERAL}",
                "MULTIAPPEND", "CATENATE", "BINARY", "SORT", "ESORT", "SORT=DISPLAY",
                "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "UTF8=ACCEPT", "COMPRESS=DEFLATE",
                "WITHIN", "METADATA", "CONTEXT=SEARCH", "CONTEXT=SORT", "NOTIFY",
                "URLAUTH", "URLAUTH=BINARY"]
        if self.state == NOT_AUTHENTICATED:
            caps = base
            if not self.tls and self.tls_context is not None:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.plaintext_allowed() else "LOGINDISABLED")
        elif self._compressor is not None:
            caps.remove("COMPRESS=DEFLATE")
        return " ".join(caps)

    # --- folder names ------------------------------------------------------------
    def decode_name(self, name: str) -> str:
        if not self.utf8 and name.isascii() and "&" in name:
            try:
                name = fmt.mutf7_decode(name)
            except ValueError as error:
                raise No(f"bad mailbox name: {error}", "CANNOT") from None
        if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
            name = "INBOX" + name[5:]
        return name

    def encode_name(self, name: str) -> bytes:
        return fmt.astring(name if self.utf8 else fmt.mutf7_encode(name))

    # --- the selected folder -------------------------------------------------------
    def _leave_folder(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.view is not None:
            watcher().unwatch(self.view.folder_id)
        self.view = None
        self.contexts.clear()  # RFC 5267 §4.3: updates cease with the folder
        if self.state == SELECTED:
            self.state = AUTHENTICATED

    def _on_change(self, event: events.FolderChanged) -> None:
        view = self.view
        # A change the view already holds (this session's own write, see
        # ``own_write``) is no news.
        if view is not None and event.folder_id == view.folder_id and \
                event.highestmodseq > view.highestmodseq:
            self._news = news_mark()
            self._news_modseq = max(self._news_modseq, event.highestmodseq)
            self._changed = True
            if self._idle_together:
                watcher().idle_news(event.folder_id)
            else:
                self.wake()

    # What the watcher asks of a session in a plain IDLE (notify.py).
    def has_news(self) -> bool:
        return self._changed

    def idle_modseq(self) -> int:
        """The MODSEQ the selected folder's view stands at (an idler has a view)."""
        assert self.view is not None
        return self.view.highestmodseq

    def claims_recent(self, changes: FolderChanges | None) -> bool:
        """Whether the changes bring messages this session would claim
        \\Recent for (RFC 3501 §2.3.2; none in IMAP4rev2, RFC 9051 §2.3.2)."""
        view = self.view
        if view is None or changes is None or view.readonly or self.rev2:
            return False
        last = view.uids[-1] if view.uids else 0
        return any(row[0] > last for row in changes.changed)

    def tell_idle_news(self, changes: FolderChanges | None, recent: tuple[int, int], *,
                       mark: int) -> None:
        """News read for every idler of the folder, by a read started at
        ``mark``: told as ``refresh`` tells it (a plain IDLE has no search
        contexts); the news is all told unless more came since."""
        if self._news < mark:
            self._changed = False
            self._news_modseq = 0
        if changes is None:
            self.untagged("BYE the selected folder was deleted")  # RFC 3501 §7.1.5
            self._close()
            return
        assert self.view is not None
        self._announce(self.view.apply(changes, allow_expunge=True, recent=recent))

    def look_again(self) -> None:
        """An explicit poll (NOOP, CHECK): the answer reads the folder even
        without news, since news of another process's change may still be on
        its way (the poller's tick without Redis). RFC 3501 §6.1.2: NOOP is the
        client's poll for new messages and status updates."""
        if self.view is not None:
            self._news = news_mark()
            self._changed = True
            self._news_modseq = LOOK_AGAIN
            self.wake()

    async def refresh(self, *, allow_expunge: bool) -> Updates | None:
        """Bring the view up to date and tell the client. A read that another
        session started after this one's latest news will do: every change
        whose event came before it is in it, later ones bring news again."""
        view = self.view
        if view is None:
            return None
        if not self._changed:
            # No change event since the last look (events come at once from
            # this process, by Redis or the poller from others): no query.
            # Expunges held back during FETCH/STORE/SEARCH are told now.
            if allow_expunge and view.pending_expunge:
                self._announce(view.apply(
                    FolderChanges(view.highestmodseq, view.uidnext, [], []), allow_expunge=True))
            return None
        self._changed = False
        self._news_modseq = 0
        changes = await watcher().folder_changes(view.folder_id, view.highestmodseq,
                                                 self._news)
        if changes is None:
            # RFC 3501 §7.1.5: the folder is gone under us.
            self.untagged("BYE the selected folder was deleted")
            self._close()
            return None
        recent = (0, 0)
        if self.claims_recent(changes):
            recent = await watcher().claim_recent(view.folder_id, changes.uidnext)
        updates = view.apply(changes, allow_expunge=allow_expunge, recent=recent)
        self._announce(updates)
        await self.tell_contexts([*updates.changed, *updates.new_uids], new=updates.new_uids)
        return updates

    def own_write(self, modseq: int, *, expunged: Sequence[int] = ()) -> None:
        """A write of this session took the folder from MODSEQ ``modseq`` - 1
        to ``modseq`` (the store gives one write one new MODSEQ): its flag
        changes already applied to the view, or the UIDs it ``expunged``,
        told here. If the view stood at ``modseq`` - 1 it now stands at
        ``modseq``, and the write's own change event is no news: no read of
        the folder for it."""
        view = self.view
        if view is None or view.highestmodseq != modseq - 1:
            return  # another change came in between: the next look reads it
        if expunged:
            self._announce(view.apply(FolderChanges(modseq, view.uidnext, [], list(expunged)),
                                      allow_expunge=True))
        view.highestmodseq = modseq
        if self._news_modseq <= modseq:
            self._changed = False
            self._news_modseq = 0

    def tell_flags(self) -> None:
        """FLAGS and PERMANENTFLAGS for the selected folder; again whenever a
        keyword the client has not been told of is in use, before any FETCH
        names it (RFC 3501 §7.2.6, RFC 9051 §7.3.5: clients keep the list)."""
        view = self.view
        assert view is not None
        self.keywords_told.update(view.keywords_in_use())
        SNAPSHOTS.known_keywords(view.folder_id).update(self.keywords_told)
        flags = SYSTEM_FLAGS + sorted(self.keywords_told)
        self.untagged(f"FLAGS {fmt.flag_list(flags).decode()}")
        permanent = [*flags, "\\*"] if not view.readonly else []
        self.untagged(f"OK [PERMANENTFLAGS {fmt.flag_list(permanent).decode()}] flags")

    def tell_keywords_of(self, changes: Sequence[Any]) -> None:
        """Before FETCH responses name the keywords of messages this session
        changed: the store returns each message's whole keyword list, which
        may hold keywords another session set and nobody told yet."""
        if any(word not in self.keywords_told for c in changes for word in c.keywords):
            self.tell_flags()

    def tell_new_keywords(self) -> None:
        view = self.view
        assert view is not None
        if not set(view.keywords_in_use()) <= self.keywords_told:
            self.tell_flags()

    def _announce(self, updates: Updates) -> None:
        view = self.view
        assert view is not None
        if updates.changed or updates.exists:
            self.tell_new_keywords()
        if updates.expunged:
            # RFC 5267 §4.3.4: REMOVEFROM before the EXPUNGE it follows from.
            for line in self.contexts.expunged(view, updates.expunged):
                self.untagged(line)
            if self.qresync:
                # RFC 7162 §3.2.10: VANISHED instead of EXPUNGE once QRESYNC is on.
                self.untagged("VANISHED " + _uid_set([uid for _, uid in updates.expunged]))
            else:
                for seq, _uid in updates.expunged:
                    self.untagged(f"{seq} EXPUNGE")
        if updates.exists:
            self.untagged(f"{len(view)} EXISTS")
            if not self.rev2:  # RFC 9051 §7.4: no RECENT, no \Recent
                self.untagged(f"{len(view.recent)} RECENT")
        for uid in updates.changed:
            position = view.index(uid)
            if position is None:
                continue
            items = [f"FLAGS {fmt.flag_list(view.flag_names(position)).decode()}"]
            if self.condstore:
                items.append(f"MODSEQ ({view.modseqs[position]})")
            # RFC 5465 §5.1: under NOTIFY, a flag change's FETCH carries the UID.
            if self.qresync or self.condstore or self.notifier is not None:
                items.insert(0, f"UID {uid}")
            self.untagged(f"{position + 1} FETCH ({' '.join(items)})")

    async def tell_contexts(self, uids: Sequence[int], *, new: Sequence[int] = ()) -> None:
        """ESEARCH ADDTO / REMOVEFROM for the UPDATE contexts whose result the
        change of these messages (flags, or ``new``) changes (RFC 5267 §4.3);
        before it, the FETCH that RETURN (UPDATE (…)) asked for of the new
        messages joining the result (RFC 5465 §7: not of those joining by a
        flag change)."""
        if not self.contexts or not uids:
            return
        view = self.view
        assert view is not None
        for context in list(self.contexts.by_tag.values()):
            matched = {view.uids[p] for p in await searching.run(self, context.key, uids)}
            touched = set(uids)
            members = [u for u in context.result if u not in touched] + sorted(matched)
            if context.criteria is None:
                result = sorted(members)
            else:
                result = await _sorted_uids(view, members, context.criteria)
            joined = [uid for uid in new if uid in matched]
            if context.fetch and joined:
                await self.fetch_new(joined, list(context.fetch))
            line = self.contexts.changed(context, view, result)
            if line is not None:
                self.untagged(line)

    async def _unsolicited(self, command: Command) -> None:
        if self.view is None or self._closed:
            return
        # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH
        # (the UID forms may carry them).
        allow = command.name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD")
        await self.refresh(allow_expunge=allow)

    def positions(self, seqs: SeqSet, *, uid: bool) -> list[int]:
        view = self.view
        assert view is not None
        if seqs.saved:
            return [p for p in (view.index(u) for u in self.saved) if p is not None]
        if uid:
            largest = view.uids[-1] if view.uids else 0
            ranges = seqs.resolve(largest)
            return view.uid_positions(ranges)
        ranges = seqs.resolve(len(view))
        if any(high > len(view) for _low, high in ranges) or not len(view):
            # RFC 3501 §9 seq-number: a sequence number past the last message is BAD.
            raise Bad("message sequence number out of range")
        return view.seq_positions(ranges)

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command in selected state (RFC 7162 §3.1): the
        client learns the folder's HIGHESTMODSEQ the first time."""
        if not self.condstore and self.view is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {self.view.highestmodseq}] CONDSTORE enabled")
        self.condstore = True

    def writable_view(self) -> FolderView:
        view = self.view
        assert view is not None
        if view.readonly:
            raise No("folder is read-only", "READ-ONLY")
        return view

    async def folder_named(self, name: str) -> Folder:
        try:
            return await _sync(store.get_folder)(self.mailbox, self.decode_name(name))
        except NotFound:
            raise No(f"no folder named {name}", "NONEXISTENT") from None


# Commands that change what NOTIFY's MailboxName, SubscriptionChange and
# metadata events are about.
_OUTLINE_COMMANDS = {"CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "SETMETADATA"}

CommandHandler = Callable[[IMAPSession, Command], Any]
COMMANDS: dict[str, tuple[CommandHandler, set[str]]] = {}


def command(name: str, states: set[str]) -> Callable[[CommandHandler], CommandHandler]:
    def register(func: CommandHandler) -> CommandHandler:
        COMMANDS[name] = (func, states)
        return func

    return register


# --- any state (RFC 3501 §6.1) ------------------------------------------------------


@command("CAPABILITY", ANY)
async def capability(session: IMAPSession, cmd: Command) -> None:
    session.untagged(f"CAPABILITY {session.capabilities()}")


@command("NOOP", ANY)
async def noop(session: IMAPSession, cmd: Command) -> None:
    session.look_again()


@command("LOGOUT", ANY)
async def logout(session: IMAPSession, cmd: Command) -> str:
    session.untagged("BYE logging out")
    session.state = LOGOUT
    return "OK LOGOUT completed"


@command("ID", ANY)
async def id_(session: IMAPSession, cmd: Command) -> None:
    # RFC 2971 §3.1
    session.untagged('ID ("name" "Mailhost" "vendor" "Mailhost")')


# --- not authenticated (RFC 3501 §6.2) ------------------------------------------------


@command("STARTTLS", {NOT_AUTHENTICATED})
async def starttls(session: IMAPSession, cmd: Command) -> str | None:
    if session.tls or session.tls_context is None:
        raise Bad("TLS is already active" if session.tls else "TLS is not available")
    session._tagged(cmd.tag, "OK begin TLS negotiation now")
    # RFC 3501 §6.2.1 / RFC 7817: anything sent after STARTTLS before the
    # handshake is an injection attempt and is thrown away.
    session.framer.clear()
    session._flush()  # the OK goes out in the clear, before the handshake
    loop = asyncio.get_running_loop()
    assert session.transport is not None
    transport = await loop.start_tls(session.transport, session, session.tls_context,
                                     server_side=True)
    if transport is None:
        raise ConnectionError("TLS handshake failed")
    session.transport = transport  # type: ignore[assignment]
    session.tls = True
    session.framer.clear()
    raise _AlreadyAnswered


class _AlreadyAnswered(Exception):
    """The handler wrote its tagged answer itself (STARTTLS, COMPRESS)."""


async def _login_with(session: IMAPSession, login: str, password: str) -> None:
    mailbox = await aauthenticate(login, password, remote_ip=session.peer, protocol="imap")
    if mailbox is None:
        raise No("invalid credentials or account locked", "AUTHENTICATIONFAILED")
    session.mailbox = mailbox
    session.state = AUTHENTICATED


@command("LOGIN", {NOT_AUTHENTICATED})
async def login(session: IMAPSession, cmd: Command) -> str:
    if not session.plaintext_allowed():
        raise No("use STARTTLS first", "PRIVACYREQUIRED")
    await _login_with(session, cmd.args["user"].decode("utf-8", "replace"),
                      cmd.args["password"].decode("utf-8", "replace"))
    return f"OK [CAPABILITY {session.capabilities()}] logged in"


@command("AUTHENTICATE", {NOT_AUTHENTICATED})
async def authenticate(session: IMAPSession, cmd: Command) -> str:
    if cmd.args["mechanism"] != "PLAIN":
        raise No("only AUTHENTICATE PLAIN is supported")
    if not session.plaintext_allowed():
        raise No("use STARTTLS first", "PRIVACYREQUIRED")
    response = cmd.args["initial"]
    if response is None:
        session._write(b"+ \r\n")
        line = (await session._read_line()).rstrip(b"\r\n")
        if line == b"*":
            raise Bad("authentication cancelled")  # RFC 3501 §6.2.2
        response = line
    if response == b"=":
        response = b""
    try:
        decoded = base64.b64decode(response, validate=True)
    except (binascii.Error, ValueError):
        raise Bad("response is not base64") from None
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        raise No("malformed PLAIN response", "AUTHENTICATIONFAILED")
    authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        raise No("cannot act as another user", "AUTHORIZATIONFAILED")
    await _login_with(session, authcid, password)
    return f"OK [CAPABILITY {session.capabilities()}] logged in"


# --- authenticated (RFC 3501 §6.3) ------------------------------------------------------


@command("ENABLE", {AUTHENTICATED})  # RFC 5161 §3.1: authenticated state only
async def enable(session: IMAPSession, cmd: Command) -> None:
    # RFC 5161 §3.1
    enabled = []
    for name in cmd.args["capabilities"]:
        if name == "CONDSTORE" and not session.condstore:
            session.condstore = True
            enabled.append(name)
        elif name == "QRESYNC" and not session.qresync:
            session.qresync = session.condstore = True
            enabled.append(name)
        elif name == "UTF8=ACCEPT" and not session.utf8:
            session.utf8 = True
            enabled.append(name)
        elif name == "IMAP4REV2" and not session.rev2:
            session.rev2 = True
            enabled.append("IMAP4rev2")
    session.untagged(" ".join(["ENABLED", *enabled]))


@command("NAMESPACE", AUTHED)
async def namespace(session: IMAPSession, cmd: Command) -> None:
    # RFC 2342 §5: one personal namespace, no others.
    session.untagged('NAMESPACE (("" "/")) NIL NIL')


async def _select(session: IMAPSession, cmd: Command, *, readonly: bool) -> str:
    if session.view is not None:
        session._leave_folder()
        # RFC 7162 §3.2.11
        session.untagged("OK [CLOSED] previous folder closed")
    session.state = AUTHENTICATED
    if cmd.args["condstore"]:
        session.condstore = True
    qresync = cmd.args["qresync"]
    if qresync is not None and not session.qresync:
        raise Bad("QRESYNC is not enabled")
    folder = await session.folder_named(cmd.args["mailbox"])
    view = SNAPSHOTS.start(folder_id=folder.pk, name=folder.name,
                           uidvalidity=folder.uidvalidity, readonly=readonly)
    changes = await _sync(store.folder_changes)(
        folder.pk, view.highestmodseq, head=(folder.highestmodseq, folder.uidnext))
    assert changes is not None  # the head was given
    # \Recent is gone in IMAP4rev2 (RFC 9051 §2.3.2): such a session claims none.
    # EXAMINE shows what is recent without claiming it (RFC 3501 §6.3.2: read-only
    # access does not clear \Recent), so a later SELECT still gets it.
    if session.rev2:
        recent = (0, 0)
    elif readonly:
        recent = (folder.recent_uid, folder.uidnext)
    else:
        recent = await watcher().claim_recent(folder.pk, changes.uidnext,
                                              head=(folder.recent_uid, folder.uidnext))
    view.apply(changes, allow_expunge=True)
    SNAPSHOTS.keep(view)
    view.mark_recent(*recent)
    session.view = view
    session.state = SELECTED
    session.saved = []
    session._unsubscribe = events.subscribe(folder.mailbox_id, session._on_change)
    watcher().watch(folder.mailbox_id, folder.pk, view.highestmodseq)
    # A keyword once told in this process stays in FLAGS (as Dovecot keeps a
    # folder's keywords): other sessions' clients may still see it on messages.
    session.keywords_told = set(SNAPSHOTS.known_keywords(folder.pk))
    session.tell_flags()
    session.untagged(f"{len(view)} EXISTS")
    if session.rev2:
        # RFC 9051 §6.3.2: a LIST response for the selected mailbox; no RECENT/UNSEEN.
        session.untagged(b'LIST () "/" ' + session.encode_name(view.name))
    else:
        session.untagged(f"{len(view.recent)} RECENT")
        unseen = view.first_unseen()
        if unseen is not None:
            session.untagged(f"OK [UNSEEN {unseen}] first unseen")
    session.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
    session.untagged(f"OK [UIDNEXT {view.uidnext}] predicted next UID")
    session.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] highest")
    if qresync is not None:
        await _qresync(session, qresync)
    return f"OK [{'READ-ONLY' if readonly else 'READ-WRITE'}] {cmd.name} completed"


async def _qresync(session: IMAPSession, params: tuple) -> None:
    # RFC 7162 §3.2.5: tell what vanished and what changed since the client's MODSEQ.
    view = session.view
    assert view is not None
    uidvalidity, modseq, known, match = params
    if uidvalidity != view.uidvalidity:
        return
    largest = view.uids[-1] if view.uids else 0
    # RFC 7162 §3.2.5.2: the client knows every expunge up to a UID its
    # sequence match data still finds in place; none of those is told again.
    known_up_to = view.matched_uid(*(
        itertools.chain.from_iterable(range(low, high + 1) for low, high in numbers)
        for numbers in (match[0].resolve(len(view)), match[1].resolve(largest))
    )) if match is not None else 0
    vanished = await _sync(store.expunged_since)(view.folder_id, modseq, above=known_up_to)
    if known is not None:
        ranges = known.resolve(largest)
        vanished = [u for u in vanished if any(a <= u <= b for a, b in ranges)]
    if vanished:
        session.untagged("VANISHED (EARLIER) " + _uid_set(vanished))
    for position, uid in enumerate(view.uids):
        if view.modseqs[position] > modseq:
            flags = fmt.flag_list(view.flag_names(position)).decode()
            session.untagged(f"{position + 1} FETCH (UID {uid} FLAGS {flags} "
                             f"MODSEQ ({view.modseqs[position]}))")


@command("CREATE", AUTHED)
async def create(session: IMAPSession, cmd: Command) -> None:
    name = session.decode_name(cmd.args["mailbox"]).rstrip("/")
    if name.upper() == "INBOX":
        raise No("INBOX exists already", "ALREADYEXISTS")
    use = ""
    if cmd.args["use"]:
        if len(cmd.args["use"]) > 1 or cmd.args["use"][0] not in SpecialUse.values:
            # RFC 6154 §3
            raise No("unsupported special use", "USEATTR")
        use = cmd.args["use"][0]
    # Store errors become NO [ALREADYEXISTS] / [CANNOT] in IMAPSession._handle.
    # RFC 3501 §6.3.3: CREATE does not subscribe (clients SUBSCRIBE themselves).
    await _sync(store.create_folder)(session.mailbox, name, special_use=use,
                                     subscribed=False)


@command("DELETE", AUTHED)
async def delete(session: IMAPSession, cmd: Command) -> None:
    name = session.decode_name(cmd.args["mailbox"])
    if session.view is not None and session.view.name == name:
        raise No("cannot delete the selected folder", "INUSE")
    await _sync(store.delete_folder)(session.mailbox, name)


@command("RENAME", AUTHED)
async def rename(session: IMAPSession, cmd: Command) -> None:
    old = session.decode_name(cmd.args["mailbox"])
    new = session.decode_name(cmd.args["new"])
    await _sync(store.rename_folder)(session.mailbox, old, new)


@command("SUBSCRIBE", AUTHED)
async def subscribe(session: IMAPSession, cmd: Command) -> None:
    await _sync(store.subscribe)(session.mailbox, session.decode_name(cmd.args["mailbox"]))


@command("UNSUBSCRIBE", AUTHED)
async def unsubscribe(session: IMAPSession, cmd: Command) -> None:
    await _sync(store.unsubscribe)(session.mailbox, session.decode_name(cmd.args["mailbox"]))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # RFC 3501 §6.3.8: "*" matches anything, "%" anything but the delimiter.
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


async def _list(session: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    verb = "LSUB" if args.get("lsub") else "LIST"
    reference = session.decode_name(args["reference"]) if args["reference"] else ""
    patterns = list(args["patterns"])
    if verb == "LIST" and patterns == [""]:
        # RFC 3501 §6.3.8: the delimiter and root name.
        session.untagged('LIST (\\Noselect) "/" ""')
        return
    full = []
    for pattern in patterns:
        with contextlib.suppress(No):
            # A pattern that is not valid modified UTF-7 matches only itself.
            pattern = session.decode_name(pattern) if pattern else pattern
        full.append(_pattern_regex(reference + pattern if reference else pattern))
    folders = await _sync(store.list_folders)(session.mailbox)
    by_name = {f.name: f for f in folders}
    names = set(by_name)
    # Levels that exist only as parents of other folders.
    for name in list(names):
        levels = name.split("/")
        for i in range(1, len(levels)):
            names.add("/".join(levels[:i]))
    has_children = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    subscribed_only = "SUBSCRIBED" in args["selection"] or verb == "LSUB"
    recursive = "RECURSIVEMATCH" in args["selection"]
    returns = set(args["returns"])
    # A plain LIST (most clients' and imaptest's) does not read the subscriptions.
    subscribed = (await _sync(store.subscribed_names)(session.mailbox)
                  if subscribed_only or recursive or "SUBSCRIBED" in returns else set())
    if subscribed_only:
        # RFC 3501 §6.3.6, RFC 5258 §3.1: a subscribed name whose folder is gone
        # is still listed (as \NonExistent), and so are its superior levels.
        for name in subscribed:
            levels = name.split("/")
            names.update("/".join(levels[:i]) for i in range(1, len(levels) + 1))
    special_only = "SPECIAL-USE" in args["selection"]
    extended = bool(args["selection"] or args["returns"]) and verb == "LIST"
    statuses = args["status"]

    def matches(name: str) -> bool:
        lowered = "inbox" + name[5:] if name == "INBOX" or name.startswith("INBOX/") else name
        return any(r.fullmatch(name) or r.fullmatch(lowered) for r in full)

    def subscribed_below(name: str) -> bool:
        """A subscribed descendant the patterns do not list themselves: RFC 5258
        §3.5 CHILDINFO, RFC 3501 §6.3.9 LSUB with "%" (as Dovecot does)."""
        return any(s.startswith(name + "/") and not matches(s) for s in subscribed)

    lines = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not matches(name):
            continue
        folder = by_name.get(name)
        attributes: list[str] = []
        child_info = False
        if subscribed_only and name not in subscribed:
            if verb == "LSUB" and subscribed_below(name):
                attributes.append("\\Noselect")
            elif recursive and subscribed_below(name):
                child_info = True
            else:
                continue
        if special_only and not (folder and folder.special_use):
            continue
        if verb == "LSUB" and folder is None and not attributes:
            attributes.append("\\Noselect")  # subscribed, but the folder is gone
        if verb == "LIST":
            if folder is None:
                attributes.append("\\NonExistent" if extended else "\\Noselect")
            if name in has_children:
                attributes.append("\\HasChildren")
            elif folder is not None:
                attributes.append("\\HasNoChildren")
            # RFC 5258 §3.1: the SUBSCRIBED selection implies the return option.
            if name in subscribed and ("SUBSCRIBED" in returns or subscribed_only):
                attributes.append("\\Subscribed")
            if folder is not None and folder.special_use:
                attributes.append(folder.special_use)
        line = (f"{verb} ({' '.join(attributes)}) \"/\" ".encode()
                + session.encode_name(name))
        if child_info:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        lines.append((line, folder))
    # RFC 5819: STATUS after the LIST line of each selectable folder, all read
    # in one query.
    values = await _sync(store.folders_status)(
        [folder.pk for _line, folder in lines if folder is not None],
        statuses) if statuses else {}
    for line, folder in lines:
        session.untagged(line)
        if folder is not None and folder.pk in values:
            _tell_status(session, folder, statuses, values[folder.pk])


def _tell_status(session: IMAPSession, folder: Folder, items: list[str],
                 values: dict[str, int]) -> None:
    text = " ".join(f"{item} {values[item]}" for item in items)
    session.untagged(b"STATUS " + session.encode_name(folder.name) + f" ({text})".encode())


async def _status_of(session: IMAPSession, folder: Folder, items: list[str]) -> None:
    _tell_status(session, folder, items, await _sync(store.folder_status)(folder, items))


@command("STATUS", AUTHED)
async def status(session: IMAPSession, cmd: Command) -> None:
    folder = await session.folder_named(cmd.args["mailbox"])
    items = cmd.args["items"]
    if "APPENDLIMIT" in items:
        items = [i for i in items if i != "APPENDLIMIT"]
        values = await _sync(store.folder_status)(folder, items) if items else {}
        values["APPENDLIMIT"] = settings.MAILHOST_IMAP_MAX_LITERAL
        _tell_status(session, folder, [*items, "APPENDLIMIT"], values)
        return
    await _status_of(session, folder, items)


@command("APPEND", AUTHED)
async def append(session: IMAPSession, cmd: Command) -> str:
    name = session.decode_name(cmd.args["mailbox"])
    messages = cmd.args["messages"]

    def prepare() -> tuple[Folder, list[store.DeliveryRequest]]:
        # RFC 4469 §5: an unknown target is TRYCREATE before any URL is looked at.
        folder = store.get_folder(session.mailbox, name)
        prepared = []
        for message in messages:
            data = message["data"]
            if message["catenate"] is not None:
                data = _catenated(session, message["catenate"])
            if not data:
                raise No("empty message")
            bits, keywords = _flag_bits(message["flags"])
            prepared.append(store.DeliveryRequest(
                [session.mailbox.pk], encode_binary_parts(data),  # RFC 3516 §4.4, §6
                folder=folder.name, flags=bits, keywords=keywords,
                internal_date=message["date"], fallback_to_inbox=False))
        return folder, prepared

    def append_all(requests: list[store.DeliveryRequest]) -> list[int]:
        # RFC 3502 §6.3.11: all messages or none, so one transaction of their
        # own; the bytes are fsynced before it, not while it holds the write lock.
        store.prepare_deliveries(requests)
        with transaction.atomic():
            refused = next(filter(None, store.deliver_batch(requests)), None)
            if refused is not None:
                raise refused
        return [r.messages[0].uid for r in requests]

    try:
        folder, requests = await _sync(prepare)()
        uidvalidity = folder.uidvalidity
        if len(requests) == 1:
            # Appends of all sessions that arrive together share a transaction
            # and a round of fsyncs; the OK goes out once the batch is durable.
            await committer().submit(requests[0])
            uids = [requests[0].messages[0].uid]
        else:
            uids = await _sync(append_all)(requests)
    except NotFound:
        raise No(f"no folder named {cmd.args['mailbox']}", "TRYCREATE") from None
    except OverQuota as error:
        raise No(error.message, "OVERQUOTA") from None
    # RFC 4315 §3: APPENDUID
    return f"OK [APPENDUID {uidvalidity} {_uid_set(uids)}] APPEND completed"


def _catenated(session: IMAPSession, parts: list[tuple[str, bytes]]) -> bytes:
    """RFC 4469 §5 CATENATE: the TEXT parts and the octets the URLs name, in
    order (run in a worker thread: it reads the store)."""
    out = []
    for kind, value in parts:
        if kind == "TEXT":
            out.append(value)
            continue
        # RFC 4469 §6: a URL that names nothing is NO [BADURL url].
        shown = value.decode("utf-8", "replace").replace("]", "%5D")
        try:
            url = parse_imap_url(value)
            # A URL of another user's mailbox names nothing of this one: never
            # read it from the signed-in user's folders of the same name.
            if url.user is not None and url.user.lower() != session.mailbox.address.lower():
                raise NotFound("another user's message")
            folder = store.get_folder(session.mailbox, session.decode_name(url.mailbox))
        except (ValueError, NotFound):
            raise No("the URL names no message", f"BADURL {shown}") from None
        found = _url_part(folder, url)
        if found is None:
            raise No("the URL names no message part", f"BADURL {shown}")
        out.append(_url_partial(found[0], url))
    return b"".join(out)


def _url_part(folder: Folder, url: ImapUrl) -> tuple[bytes, dict, bytes, dict] | None:
    """The octets of the section an IMAP URL names in ``folder`` (RFC 5092 §3),
    before any PARTIAL, the MIME part they are, and the whole message and its
    structure; None when it names nothing (run in a worker thread: it reads
    the store)."""
    rows = store.message_rows(folder.pk, [url.uid], ["blob_id", "blob__bodystructure"])
    if (url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity) or not rows:
        return None
    filed.read_bytes(rows)
    structure = rows[0]["blob__bodystructure"]
    section = url.section
    data = fmt.section_bytes(rows[0]["raw"], structure, section.part, section.text,
                             section.fields)
    part = mime.find_part(structure, list(section.part)) if section.part else structure
    if data is None or part is None:
        return None
    return data, part, rows[0]["raw"], structure


def _url_partial(data: bytes, url: ImapUrl) -> bytes:
    if url.partial is None:
        return data
    origin, length = url.partial
    return data[origin:] if length is None else data[origin:origin + length]


# --- URLAUTH (RFC 4467, RFC 5524 URLAUTH=BINARY) --------------------------------


@command("GENURLAUTH", AUTHED)
async def genurlauth(session: IMAPSession, cmd: Command) -> None:
    made = []
    for raw, mechanism in cmd.args["urls"]:
        try:
            url = parse_auth_url(raw)
        except ValueError as error:
            raise Bad(f"not a URLAUTH rump URL: {error}") from None
        if url.token is not None:
            raise Bad("the URL is already authorized")  # RFC 4467 §7: a rump
        if mechanism != URLAUTH_MECHANISM:
            raise No(f"unsupported mechanism {mechanism}")
        if url.owner.lower() != session.mailbox.address.lower():
            raise No("a URL of another user's mailbox")  # RFC 4467 §7
        try:
            token = await _sync(urlauth.sign)(session.mailbox,
                                              session.decode_name(url.message.mailbox), url.rump)
        except (NotFound, Invalid):
            raise No(f"no folder named {url.message.mailbox}", "NONEXISTENT") from None
        made.append(fmt.quoted(url.rump + f":{mechanism}:{token}".encode()))
    session.untagged(b"GENURLAUTH " + b" ".join(made))


@command("URLFETCH", AUTHED)
async def urlfetch(session: IMAPSession, cmd: Command) -> None:
    # RFC 4467 §7: a URL that is invalid or not for this user fetches NIL.
    items = [fmt.quoted(raw) + b" " + await _sync(_url_fetched)(session, raw, params)
             for raw, params in cmd.args["urls"]]
    session.untagged(b"URLFETCH " + b" ".join(items))


def _url_fetched(session: IMAPSession, raw: bytes, params: tuple[str, ...] | None) -> bytes:
    """The data of one URLFETCH response item (RFC 4467 §9 nstring, RFC 5524 §4
    the parenthesized list), NIL when the URL fetches nothing."""
    try:
        url = parse_auth_url(raw)
    except ValueError:
        return b"NIL"
    if url.mechanism != URLAUTH_MECHANISM or url.token is None or \
            not url.allows(session.mailbox.address) or url.expired(timezone.now()):
        return b"NIL"
    try:
        name = session.decode_name(url.message.mailbox)
    except No:
        return b"NIL"
    folder = urlauth.verify(url.owner, name, url.rump, url.token)
    found = _url_part(folder, url.message) if folder is not None else None
    if found is None:
        return b"NIL"
    data, part, raw_message, structure = found
    if params is None:
        return fmt.literal(_url_partial(data, url.message))
    out = []
    if "BODYPARTSTRUCTURE" in params:
        if "BINARY" in params and not url.message.section.text:
            # RFC 5524 §3 (as Dovecot serves it): with BINARY, the structure
            # describes the decoded octets sent, each part's sizes decoded.
            with contextlib.suppress(UnknownEncoding):
                decoded_structure = mime.analyze(binary_section(
                    raw_message, structure, [], relabel=False)).bodystructure
                section = url.message.section.part
                part = (mime.find_part(decoded_structure, list(section)) if section
                        else decoded_structure) or part
        out.append(b"BODYPARTSTRUCTURE " + fmt.body_structure(part))
    if "BODY" in params:
        out.append(b"BODY " + fmt.literal(_url_partial(data, url.message)))
    if "BINARY" in params:
        decoded = None
        if not url.message.section.text:
            with contextlib.suppress(UnknownEncoding):
                decoded = _url_partial(binary_section(raw_message, structure,
                                                      url.message.section.part), url.message)
        if decoded is None:
            out.append(b"BINARY NIL")  # not a body part, or an encoding we cannot undo
        else:
            literal = fmt.literal(decoded)
            out.append(b"BINARY " + (b"~" + literal if b"\0" in decoded else literal))
    return b"(" + b" ".join(out) + b")"


@command("RESETKEY", AUTHED)
async def resetkey(session: IMAPSession, cmd: Command) -> None:
    unknown = [m for m in cmd.args["mechanisms"] if m != URLAUTH_MECHANISM]
    if unknown:
        raise No(f"unsupported mechanism {unknown[0]}")
    name = cmd.args["mailbox"]
    try:
        await _sync(urlauth.reset_keys)(
            session.mailbox, session.decode_name(name) if name is not None else None)
    except (NotFound, Invalid):
        raise No(f"no folder named {name}", "NONEXISTENT") from None


@command("GETQUOTAROOT", AUTHED)
async def getquotaroot(session: IMAPSession, cmd: Command) -> None:
    # RFC 9208 §4.3.3: one quota root, "", for the whole mailbox.
    await session.folder_named(cmd.args["mailbox"])
    session.untagged(b"QUOTAROOT " + session.encode_name(
        session.decode_name(cmd.args["mailbox"])) + b' ""')
    await _quota(session)


@command("GETQUOTA", AUTHED)
async def getquota(session: IMAPSession, cmd: Command) -> None:
    if cmd.args["root"] != "":
        raise No("no such quota root", "NONEXISTENT")
    await _quota(session)


@command("SETQUOTA", AUTHED)
async def setquota(session: IMAPSession, cmd: Command) -> None:
    raise No("quotas are set by the administrator", "NOPERM")


def _metadata_entries(names: Sequence[str]) -> None:
    # RFC 5464 §3.2: a malformed entry name is a protocol error.
    try:
        for name in names:
            metadata.validate_entry(name)
    except Invalid as error:
        raise Bad(error.message) from None


@command("GETMETADATA", AUTHED)
async def getmetadata(session: IMAPSession, cmd: Command) -> str | None:
    args = cmd.args
    _metadata_entries(args["entries"])
    name = session.decode_name(args["mailbox"]) if args["mailbox"] else ""
    found = await _sync(metadata.get_metadata)(session.mailbox, name, args["entries"],
                                                args["depth"])
    maxsize, longest = args["maxsize"], 0
    if maxsize is not None:
        # RFC 5464 §4.2.1: larger values are left out and their size told.
        longest = max((len(value) for _entry, value in found if len(value) > maxsize),
                      default=0)
        found = [(entry, value) for entry, value in found if len(value) <= maxsize]
    if found:
        values = b" ".join(fmt.astring(entry) + b" " + (
            b"~" + fmt.literal(value) if b"\0" in value else fmt.string(value))
            for entry, value in found)
        mailbox = session.encode_name(name) if name else b'""'
        session.untagged(b"METADATA " + mailbox + b" (" + values + b")")
    if longest:
        return f"OK [METADATA LONGENTRIES {longest}] GETMETADATA completed"
    return None


@command("SETMETADATA", AUTHED)
async def setmetadata(session: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    _metadata_entries([entry for entry, _value in args["values"]])
    name = session.decode_name(args["mailbox"]) if args["mailbox"] else ""
    try:
        await _sync(metadata.set_metadata)(session.mailbox, name, args["values"])
    except metadata.MaxSize as error:
        raise No(error.message, f"METADATA MAXSIZE {error.limit}") from None
    except metadata.TooMany as error:
        raise No(error.message, "METADATA TOOMANY") from None


async def _quota(session: IMAPSession) -> None:
    used, limit = await _sync(store.quota_usage)(session.mailbox)
    if limit:
        # RFC 9208 §5.1: STORAGE is in units of 1024 octets.
        session.untagged(f'QUOTA "" (STORAGE {(used + 1023) // 1024} {limit // 1024})')
    else:
        session.untagged('QUOTA "" ()')


@command("COMPRESS", AUTHED)
async def compress(session: IMAPSession, cmd: Command) -> None:
    import zlib

    if cmd.args["mechanism"] != "DEFLATE":
        raise Bad("only DEFLATE is supported")
    if session._compressor is not None:
        raise No("compression is already active", "COMPRESSIONACTIVE")  # RFC 4978 §3
    session._tagged(cmd.tag, "OK DEFLATE active")
    # RFC 4978 §4: raw deflate in both directions, from the next octet on.
    session._compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    decompressor = zlib.decompressobj(-15)
    pending = session.framer.pending()
    session.framer.clear()
    session._decompressor = decompressor
    if pending:
        session.framer.feed(decompressor.decompress(pending))
    raise _AlreadyAnswered


# --- selected (RFC 3501 §6.4) ---------------------------------------------------------


@command("CHECK", {SELECTED})
async def check(session: IMAPSession, cmd: Command) -> None:
    session.look_again()


@command("CLOSE", {SELECTED})
async def close(session: IMAPSession, cmd: Command) -> None:
    view = session.view
    assert view is not None
    if not view.readonly:
        # RFC 3501 §6.4.2: expunge silently.
        await run_store_call(store.expunge, Folder(pk=view.folder_id))
    session._leave_folder()


@command("UNSELECT", {SELECTED})
async def unselect(session: IMAPSession, cmd: Command) -> None:
    session._leave_folder()  # RFC 3691


@command("NOTIFY", AUTHED)
async def notify_(session: IMAPSession, cmd: Command) -> None:
    groups = cmd.args["groups"]
    spec = None
    if groups is not None:
        try:
            spec = check_groups(groups, session.decode_name)
        except NotifyRefused as error:
            if error.bad:
                raise Bad(error.text) from None
            raise No(error.text, error.code) from None
    if session.notifier is not None:
        session.notifier.stop()
        session.notifier = None
    if spec is None:
        return  # NOTIFY NONE
    notifier = Notifier(session, spec)
    await notifier.start(status=cmd.args["status"])
    session.notifier = notifier
    session.look_again()  # RFC 5465 §3.1: NOTIFY SET is also a NOOP


@command("CANCELUPDATE", {SELECTED})
async def cancelupdate(session: IMAPSession, cmd: Command) -> None:
    session.contexts.cancel(cmd.args["tags"])  # RFC 5267 §4.3.5


@command("EXPUNGE", {SELECTED})
async def expunge(session: IMAPSession, cmd: Command) -> None:
    view = session.writable_view()
    gone, modseq = await run_store_call(store.expunge_at, Folder(pk=view.folder_id))
    if gone:
        session.own_write(modseq, expunged=gone)


@command("UID EXPUNGE", {SELECTED})
async def uid_expunge(session: IMAPSession, cmd: Command) -> None:
    view = session.writable_view()
    uids = [view.uids[p] for p in session.positions(cmd.args["seqs"], uid=True)]
    if uids:
        gone, modseq = await run_store_call(store.expunge_at, Folder(pk=view.folder_id), uids)
        if gone:
            session.own_write(modseq, expunged=gone)


async def _copy(session: IMAPSession, cmd: Command, *, uid: bool, move: bool) -> str:
    view = session.view
    assert view is not None
    if move and view.readonly:
        raise No("folder is read-only", "READ-ONLY")
    positions = session.positions(cmd.args["seqs"], uid=uid)
    uids = [view.uids[p] for p in positions if view.uids[p] not in view.pending_expunge]
    try:
        target = await session.folder_named(cmd.args["mailbox"])
    except No:
        raise No(f"no folder named {cmd.args['mailbox']}", "TRYCREATE") from None
    if not uids:
        return f"OK {'MOVE' if move else 'COPY'} completed (nothing to do)"
    operation = store.move if move else store.copy
    try:
        mapping = await _sync(operation)(Folder(pk=view.folder_id), uids, target)
    except OverQuota as error:
        raise No(error.message, "OVERQUOTA") from None
    code = ""
    if mapping:
        code = (f"COPYUID {target.uidvalidity} {_uid_set([a for a, _ in mapping])} "
                f"{_uid_set([b for _, b in mapping])}")
    if move:
        # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges.
        if code:
            session.untagged(f"OK [{code}] moved")
        return "OK MOVE completed"
    return f"OK [{code}] COPY completed" if code else "OK COPY completed"


async def _store(session: IMAPSession, cmd: Command, *, uid: bool) -> str:
    view = session.writable_view()
    args = cmd.args
    bits, keywords = _flag_bits(args["flags"])
    if args["unchanged_since"] is not None:
        session.enable_condstore()
    positions = session.positions(args["seqs"], uid=uid)
    uids = [view.uids[p] for p in positions]
    changes, failed = await run_store_call(
        store.set_flags, Folder(pk=view.folder_id), uids, mode=args["mode"], flags=bits,
        keywords=keywords, unchanged_since=args["unchanged_since"])
    changed = {c.uid for c in changes}
    for change in changes:
        view.set_flags(change.uid, change.flags, change.keywords, change.modseq)
    if changes:
        session.own_write(changes[0].modseq)
    session.tell_keywords_of(changes)
    failed_set = set(failed)
    for position in positions:
        message_uid = view.uids[position]
        if message_uid in failed_set or message_uid in view.pending_expunge:
            continue
        if args["silent"] and not (session.condstore and message_uid in changed):
            continue
        items = []
        if uid or session.condstore:
            items.append(f"UID {message_uid}")
        if not args["silent"]:
            items.append(f"FLAGS {fmt.flag_list(view.flag_names(position)).decode()}")
        if session.condstore:
            items.append(f"MODSEQ ({view.modseqs[position]})")
        session.untagged(f"{position + 1} FETCH ({' '.join(items)})")
    await session.tell_contexts(sorted(changed))
    if failed:
        # RFC 7162 §3.1.3
        numbers = failed if uid else sorted(view.index(u) + 1 for u in failed
                                            if view.index(u) is not None)
        return f"OK [MODIFIED {_uid_set(numbers)}] conditional STORE failed"
    return "OK STORE completed"


# --- FETCH (RFC 3501 §6.4.5) -------------------------------------------------------------

_ROW_FIELDS = {
    "INTERNALDATE": ("internal_date",),
    "RFC822.SIZE": ("size",),
    "ENVELOPE": ("blob__envelope",),
    "BODYSTRUCTURE": ("blob__bodystructure",),
    "BODY": ("blob__bodystructure",),
}


def _needs_body(att: FetchAtt) -> bool:
    return att.section is not None or att.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT")


def _whole_message(att: FetchAtt) -> bool:
    """BODY[], BODY.PEEK[] (a partial range of them too) and RFC822: the
    message's bytes as they are."""
    return att.name == "RFC822" or (att.name == "BODY" and att.section is not None
                                    and not att.section.part and not att.section.text)


def _prefix_needed(atts: list[FetchAtt]) -> Callable[[dict], int | None] | None:
    """How many leading bytes of a message (its row) the body items need, when
    that is known to be less than all of it: headers of the message itself
    (up to its body) and BODY[]<0.n>, what clients fetch to list and preview
    a folder. Read with a ranged read, they spare the rest of each message
    (from S3, a GET of it). None: the whole message. A partial fetch from a
    later origin reads the whole message, which the S3 store then caches for
    the next chunk."""
    fixed, header = 0, False
    for att in atts:
        if not _needs_body(att):
            continue
        of_message = (att.name in ("BODY", "BODY.PEEK") and att.section is not None
                      and not att.section.part)
        if of_message and not att.section.text and att.partial and att.partial[0] == 0:
            fixed = max(fixed, att.partial[1])
        elif att.name == "RFC822.HEADER" or (of_message and
                                             att.section.text.startswith("HEADER")):
            header = True
        else:
            return None
    if header:
        return lambda row: _header_prefix(row["blob__bodystructure"], fixed)
    return lambda row: fixed


def _header_prefix(structure: dict, at_least: int) -> int | None:
    body_start = structure.get("body_start")
    if body_start is None:
        return None  # a blob stored unparsed has no structure yet: all of it
    return max(at_least, body_start)


def _sets_seen(att: FetchAtt) -> bool:
    return (att.section is not None and not att.peek and att.name != "BINARY.SIZE") or \
        att.name in ("RFC822", "RFC822.TEXT")


async def _fetch(session: IMAPSession, cmd: Command, *, uid: bool) -> str | None:
    view = session.view
    assert view is not None
    atts: list[FetchAtt] = list(cmd.args["atts"])
    modifiers = cmd.args["modifiers"]
    if uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))  # RFC 3501 §6.4.8
    if "CHANGEDSINCE" in modifiers or any(a.name == "MODSEQ" for a in atts):
        session.enable_condstore()
        if not any(a.name == "MODSEQ" for a in atts):
            atts.append(FetchAtt("MODSEQ"))
    if modifiers.get("VANISHED") and (not uid or not session.qresync or
                                       "CHANGEDSINCE" not in modifiers):
        raise Bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")  # RFC 7162 §3.2.6
    positions = session.positions(cmd.args["seqs"], uid=uid)
    if "CHANGEDSINCE" in modifiers:
        since = modifiers["CHANGEDSINCE"]
        if modifiers.get("VANISHED"):
            largest = view.uids[-1] if view.uids else 0
            ranges = cmd.args["seqs"].resolve(largest)
            vanished = [u for u in await _sync(store.expunged_since)(view.folder_id, since)
                        if any(a <= u <= b for a, b in ranges)]
            if vanished:
                session.untagged("VANISHED (EARLIER) " + _uid_set(vanished))
        positions = [p for p in positions if view.modseqs[p] > since]
    if not positions:
        return None
    # Implicit \Seen first, so that the FETCH responses carry the new flags.
    if not view.readonly and any(_sets_seen(a) for a in atts):
        unseen = [view.uids[p] for p in positions if not view.flags[p] & Flag.SEEN]
        if unseen:
            changes, _ = await run_store_call(
                store.set_flags, Folder(pk=view.folder_id), unseen, mode="add", flags=Flag.SEEN)
            for change in changes:
                view.set_flags(change.uid, change.flags, change.keywords, change.modseq)
            if changes:
                session.own_write(changes[0].modseq)
            session.tell_keywords_of(changes)
            if not any(a.name == "FLAGS" for a in atts):
                atts.append(FetchAtt("FLAGS"))
            seen_now = {c.uid for c in changes}
        else:
            seen_now = set()
    else:
        seen_now = set()
    fields: set[str] = set()
    for att in atts:
        if _whole_message(att):
            fields.add("blob_id")  # the bytes as they are: no structure to read
            continue
        fields.update(_ROW_FIELDS.get(att.name, ()))
        if _needs_body(att):
            fields.update(("blob_id", "blob__bodystructure"))
    need_body = any(_needs_body(a) for a in atts)
    prefix = _prefix_needed(atts) if need_body else None
    if not fields:  # UID, FLAGS, MODSEQ: all in the view, no query
        for start in range(0, len(positions), FETCH_VIEW_BATCH):
            session._write(_view_items(view, positions[start:start + FETCH_VIEW_BATCH],
                                       [att.name for att in atts]))
            await session._drain()
        return None
    batches = [positions[start:start + FETCH_BATCH]
               for start in range(0, len(positions), FETCH_BATCH)]

    def load(batch: list[int]) -> asyncio.Future[list]:
        return asyncio.ensure_future(_sync(_load_rows)(
            view.folder_id, [view.uids[p] for p in batch], sorted(fields), need_body, prefix))

    # The next batch is read while this one goes out: the database and the
    # disk work while the client reads, not after.
    loading = load(batches[0])
    try:
        for index, batch in enumerate(batches):
            rows = {row["uid"]: row for row in await loading}
            if index + 1 < len(batches):
                loading = load(batches[index + 1])
            out = []  # one write per batch, not per message
            for position in batch:
                message_uid = view.uids[position]
                row = rows.get(message_uid)
                if row is None:
                    continue  # expunged by another session, not yet told (RFC 3501 §7.4.1)
                items = [_fetch_item(session, att, position, row, message_uid in seen_now)
                         for att in atts]
                out.append(b"* %d FETCH (%s)\r\n" % (position + 1, b" ".join(items)))
            session._write(b"".join(out))
            await session._drain()
    finally:
        if not loading.done():
            loading.cancel()
    await session.tell_contexts(sorted(seen_now))  # the implicit \Seen
    return None


# The FETCH items a view answers alone, as they are formatted.
_VIEW_ITEM_FORMATS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)"}


def _view_items(view: FolderView, positions: list[int], names: list[str]) -> bytes:
    """FETCH responses of items the view holds (``_fetch_item`` says the same
    of one message): one format per response, and the flag list of messages
    without keywords formatted once per combination of flags, so that
    UID FETCH 1:* (FLAGS) of 100,000 messages is a short loop."""
    line = b"* %d FETCH (" + b" ".join(_VIEW_ITEM_FORMATS[n] for n in names) + b")\r\n"
    uids, flags, modseqs, keywords, recent = (view.uids, view.flags, view.modseqs,
                                              view.keywords, view.recent)
    flag_lists: dict[tuple[int, bool], bytes] = {}

    def flag_list(position: int, uid: int) -> bytes:
        if uid in keywords:
            return fmt.flag_list(view.flag_names(position))
        key = (flags[position], uid in recent)
        found = flag_lists.get(key)
        if found is None:
            found = flag_lists[key] = fmt.flag_list(view.flag_names(position))
        return found

    values = {"UID": lambda position, uid: uid, "FLAGS": flag_list,
              "MODSEQ": lambda position, uid: modseqs[position]}
    if names == ["UID", "FLAGS"]:  # what clients ask most, in a loop of its own
        return b"".join([line % (p + 1, uids[p], flag_list(p, uids[p])) for p in positions])
    getters = [values[name] for name in names]
    return b"".join([line % (p + 1, *[get(p, uids[p]) for get in getters])
                     for p in positions])


def _load_rows(folder_id: int, uids: list[int], fields: list[str], need_body: bool,
               prefix: Callable[[dict], int | None] | None = None) -> list:
    rows = store.message_rows(folder_id, uids, fields)
    if need_body:
        filed.read_bytes(rows, prefix)
    return rows


def _fetch_item(session: IMAPSession, att: FetchAtt, position: int, row: dict | None,
                seen_now: bool) -> bytes:
    view = session.view
    assert view is not None
    name = att.name
    if name == "UID":
        return b"UID %d" % view.uids[position]
    if name == "FLAGS":
        return b"FLAGS " + fmt.flag_list(view.flag_names(position))
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % view.modseqs[position]
    assert row is not None
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + fmt.internal_date(row["internal_date"])
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % row["size"]
    if name == "ENVELOPE":
        return b"ENVELOPE " + fmt.envelope(row["blob__envelope"])
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + fmt.body_structure(row["blob__bodystructure"])
    if name == "BODY" and att.section is None:
        return b"BODY " + fmt.body_structure(row["blob__bodystructure"], extended=False)
    raw: bytes = row["raw"]
    structure = row.get("blob__bodystructure") or {}  # not read for the whole message
    if name == "RFC822":
        return b"RFC822 " + fmt.literal(raw)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + fmt.literal(
            fmt.section_bytes(raw, structure, (), "HEADER") or b"")
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + fmt.literal(
            fmt.section_bytes(raw, structure, (), "TEXT") or b"")
    section = att.section
    assert section is not None
    if name.startswith("BINARY"):
        return _binary_item(att, raw, structure)
    data = fmt.section_bytes(raw, structure, section.part, section.text, section.fields)
    label = f"BODY[{section.label()}]"
    if data is None:
        data = b""  # RFC 3501 §6.4.5: a part that does not exist is empty
    if att.partial is not None:
        origin, count = att.partial
        data = data[origin:origin + count]
        label += f"<{origin}>"
    return label.encode() + b" " + fmt.literal(data)


def _binary_item(att: FetchAtt, raw: bytes, structure: dict) -> bytes:
    """RFC 3516 §4.2: BINARY[part] is the part with its transfer encoding undone."""
    section = att.section
    assert section is not None
    try:
        data = binary_section(raw, structure, section.part)
    except UnknownEncoding as error:
        raise No(f"cannot decode {error}", "UNKNOWN-CTE") from None
    label = f"[{section.label()}]"
    if att.name == "BINARY.SIZE":
        return f"BINARY.SIZE{label} {len(data)}".encode()
    if att.partial is not None:
        origin, count = att.partial
        data = data[origin:origin + count]
        label += f"<{origin}>"
    # A literal8 only when the octets need one (NUL).
    body = b"~" + fmt.literal(data) if b"\0" in data else fmt.literal(data)
    return f"BINARY{label} ".encode() + body


# --- SEARCH (RFC 3501 §6.4.4) -----------------------------------------------------------


async def _search(session: IMAPSession, cmd: Command, *, uid: bool) -> str | None:
    view = session.view
    assert view is not None
    args = cmd.args
    if "bad_charset" in args:
        raise No("unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
    key: SearchKey = args["key"]
    options = args["return"]
    pinned = _update_key(session, cmd, key)
    if searching.uses_modseq(key):
        session.enable_condstore()
    positions = await searching.run(session, key)
    numbers = [view.uids[p] if uid else p + 1 for p in positions]
    with_modseq = searching.uses_modseq(key) and bool(positions)
    modseq = ""
    if with_modseq:
        modseq = f" (MODSEQ {max(view.modseqs[p] for p in positions)})"
    if options is None and session.rev2:
        options = ["ALL"]  # RFC 9051 §6.4.4: results always come as ESEARCH
    if options is None:
        session.untagged("SEARCH" + "".join(f" {n}" for n in numbers) + modseq)
        return None
    # RFC 4731 ESEARCH
    if "SAVE" in options:
        session.saved = [view.uids[p] for p in positions]
        options = [o for o in options if o != "SAVE"]
        if not options:
            return None
    parts = _esearch_parts(cmd.tag, uid, numbers, options, args["partial"])
    if with_modseq:
        # RFC 4731 §3.2 / RFC 7162 §3.1.5: with only MIN and/or MAX, the
        # highest MODSEQ of the messages returned; otherwise of all matches.
        returned = ([positions[0]] if "MIN" in options else []) + \
            ([positions[-1]] if "MAX" in options else [])
        if {"ALL", "COUNT", "PARTIAL"} & set(options) or not returned:
            returned = positions
        parts.append(f"MODSEQ {max(view.modseqs[p] for p in returned)}")
    session.untagged(" ".join(parts))
    if pinned is not None:
        _keep_context(session, cmd, pinned, uid, [view.uids[p] for p in positions])
    return None


def _esearch_parts(tag: str, uid: bool, numbers: list[int], options: list[str],
                   partial_range: tuple[int, int] | None = None) -> list[str]:
    """An ESEARCH response (RFC 4731 §3.1) for numbers in result order: SEARCH's
    ascending, ESORT's sorted (RFC 5267 §3.1: MIN and MAX are the first and
    last sorted; ALL keeps the order, §3.2: ranges only where ascending;
    §4.4: PARTIAL the results in a range of that order)."""
    parts = [f'ESEARCH (TAG "{tag}")']
    if uid:
        parts.append("UID")
    if numbers:
        if "MIN" in options:
            parts.append(f"MIN {numbers[0]}")
        if "MAX" in options:
            parts.append(f"MAX {numbers[-1]}")
        if "ALL" in options:
            parts.append(f"ALL {_uid_set(numbers)}")
    if "COUNT" in options:
        parts.append(f"COUNT {len(numbers)}")
    if partial_range is not None:
        parts.append(partial(numbers, *partial_range))
    return parts


def _update_key(session: IMAPSession, cmd: Command, key: SearchKey) -> SearchKey | None:
    """For RETURN (UPDATE), the search program to keep, its sequence numbers
    and "$" pinned to the UIDs they name now (RFC 5267 §4.3); BAD when the tag
    already names a context that is kept up to date."""
    if "UPDATE" not in (cmd.args["return"] or ()):
        return None
    if cmd.tag in session.contexts.by_tag:
        raise Bad(f"tag {cmd.tag} already names a search kept up to date")
    view = session.view
    assert view is not None
    return pin_numbers(key, view, session.saved)


def _keep_context(session: IMAPSession, cmd: Command, key: SearchKey, uid: bool,
                  result: list[int], criteria: list[tuple[str, bool]] | None = None) -> None:
    tag = cmd.tag
    if len(session.contexts.by_tag) >= MAX_CONTEXTS:
        # RFC 5267 §4.3.1: refused, the other return options still answered.
        session.untagged(f'NO [NOUPDATE "{tag}"] too many searches kept up to date')
        return
    session.contexts.by_tag[tag] = Context(tag, key, uid, result, criteria,
                                           fetch=cmd.args["update_fetch"])


async def _sorted_uids(view: FolderView, uids: Sequence[int],
                       criteria: list[tuple[str, bool]]) -> list[int]:
    """UIDs in the order of the SORT criteria (RFC 5256 §3)."""
    rows = {row["uid"]: row for row in await _sync(store.message_rows)(
        view.folder_id, list(uids), ordering.SORT_FIELDS)}
    return ordering.sort([(u, rows[u]) for u in uids if u in rows], criteria)


_THREADERS = {"ORDEREDSUBJECT": ordering.ordered_subject, "REFERENCES": ordering.references}


async def _sort_or_thread(session: IMAPSession, cmd: Command, *, uid: bool) -> None:
    """RFC 5256 SORT and THREAD over the SEARCH result."""
    view = session.view
    assert view is not None
    args = cmd.args
    if "bad_charset" in args:
        raise No("unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
    threader = _THREADERS.get(args.get("algorithm", ""))
    if "algorithm" in args and threader is None:
        raise Bad(f"unsupported threading algorithm {args['algorithm']}")
    pinned = _update_key(session, cmd, args["key"])
    positions = await searching.run(session, args["key"])
    uids = [view.uids[p] for p in positions]
    if threader is not None:
        rows = {row["uid"]: row for row in await _sync(store.message_rows)(
            view.folder_id, uids, ordering.THREAD_FIELDS)}
        items = [(view.uids[p] if uid else p + 1, rows[view.uids[p]])
                 for p in positions if view.uids[p] in rows]
        session.untagged(f"THREAD {threader(items)}".rstrip())
        return
    ordered = await _sorted_uids(view, uids, args["criteria"])
    numbers = ordered if uid else [view.index(u) + 1 for u in ordered]
    if args["return"] is not None:
        options = [o for o in args["return"] if o not in ("UPDATE", "CONTEXT")]
        session.untagged(" ".join(_esearch_parts(cmd.tag, uid, numbers, options,
                                                  args["partial"])))
    else:
        session.untagged("SORT" + "".join(f" {n}" for n in numbers))
    if pinned is not None:
        _keep_context(session, cmd, pinned, uid, ordered, args["criteria"])


# --- IDLE (RFC 2177) -----------------------------------------------------------------


@command("IDLE", AUTHED)
async def idle(session: IMAPSession, cmd: Command) -> str:
    session._write(b"+ idling\r\n")
    session.idling = True
    try:
        return await _idle(session)
    finally:
        session.idling = False


async def _idle(session: IMAPSession) -> str:
    # Without NOTIFY or search contexts, news is told by the watcher, for all
    # the folder's idlers at once, without waking this task.
    view = session.view
    together = view is not None and session.notifier is None and not session.contexts
    if together:
        assert view is not None
        watcher().idle_in(session, view.folder_id)
        session._idle_together = True
    try:
        return await _idle_loop(session)
    finally:
        if together:
            assert view is not None
            session._idle_together = False
            watcher().idle_out(session, view.folder_id)


async def _idle_loop(session: IMAPSession) -> str:
    while True:
        line = session.framer.read_line()
        if line is not None:
            if line.rstrip(b"\r\n").upper() == b"DONE":
                return "OK IDLE terminated"
            raise Bad("expected DONE")
        if session._closed:
            raise ConnectionError("closed")
        if session._changed and session.notifier is None:
            await session.refresh(allow_expunge=True)
            continue
        session._data.clear()
        if session.transport is not None:
            session.transport.resume_reading()
        if session.notifier is None:
            # One plain future per idler (woken by wake): cheap for thousands.
            waiter = session._idle_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, settings.MAILHOST_IMAP_TIMEOUT)
            finally:
                session._idle_waiter = None
        else:
            # RFC 5465 §4: in IDLE, the events NOTIFY asked for, as at any time.
            await session.listen(session._data, idle=True)


# Commands that share a handler (UID forms, SELECT/EXAMINE, LIST/LSUB, …).
for _name, _states, _handler in (
    ("COPY", {SELECTED}, functools.partial(_copy, uid=False, move=False)),
    ("UID COPY", {SELECTED}, functools.partial(_copy, uid=True, move=False)),
    ("MOVE", {SELECTED}, functools.partial(_copy, uid=False, move=True)),
    ("UID MOVE", {SELECTED}, functools.partial(_copy, uid=True, move=True)),
    ("STORE", {SELECTED}, functools.partial(_store, uid=False)),
    ("UID STORE", {SELECTED}, functools.partial(_store, uid=True)),
    ("FETCH", {SELECTED}, functools.partial(_fetch, uid=False)),
    ("UID FETCH", {SELECTED}, functools.partial(_fetch, uid=True)),
    ("SEARCH", {SELECTED}, functools.partial(_search, uid=False)),
    ("UID SEARCH", {SELECTED}, functools.partial(_search, uid=True)),
    ("SELECT", AUTHED, functools.partial(_select, readonly=False)),
    ("EXAMINE", AUTHED, functools.partial(_select, readonly=True)),
    ("LIST", AUTHED, _list),
    ("LSUB", AUTHED, _list),
    ("SORT", {SELECTED}, functools.partial(_sort_or_thread, uid=False)),
    ("UID SORT", {SELECTED}, functools.partial(_sort_or_thread, uid=True)),
    ("THREAD", {SELECTED}, functools.partial(_sort_or_thread, uid=False)),
    ("UID THREAD", {SELECTED}, functools.partial(_sort_or_thread, uid=True)),
):
    COMMANDS[_name] = (_handler, _states)


# Said by apps/mailservers/limits.py instead of a greeting to a connection over the
# limits (RFC 3501 §7.1.5: BYE when the server will not accept the connection), and
# to a client silent after the greeting (§5.4 allows an autologout).
TOO_MANY_CONNECTIONS = b"* BYE too many connections, try again later\r\n"
NO_COMMAND_IN_TIME = b"* BYE autologout; no command received in time\r\n"


def protocol_factory(tls_context: ssl.SSLContext | None, listener: str = "imap",
                     ) -> Callable[[], IMAPSession]:
    implicit = listener == "imaps"

    def factory() -> IMAPSession:
        return IMAPSession(tls_context, listener, implicit)

    return factory


