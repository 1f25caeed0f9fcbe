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
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from apps.directory.services import aauthenticate, plaintext_auth_allowed
from apps.imap import ordering
from apps.imap import responses as fmt
from apps.imap import search as searching
from apps.imap.binary import encode_binary_parts
from apps.imap.notify import news_mark, watcher
from apps.imap.parser import (
    Command,
    CommandFramer,
    Continue,
    FetchAtt,
    LimitError,
    ParseError,
    SearchKey,
    SeqSet,
    TooBig,
    parse_command,
    parse_imap_url,
)
from apps.imap.view import FolderView, SnapshotCache, Updates
from apps.store import events, filed, metadata, mime
from apps.store import services as store
from apps.store.batching import committer, run_store_call
from apps.store.models import Flag, Folder, SpecialUse
from apps.store.services import FolderChanges
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import Invalid, MailhostError, NotFound, OverQuota

log = logging.getLogger("mailhost.imap")

OUTPUT_FLUSH_SIZE = 64 * 1024

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-auth", "auth", "selected", "logout"
ANY = {NOT_AUTHENTICATED, AUTHENTICATED, SELECTED}
AUTHED = {AUTHENTICATED, SELECTED}

# The folders last selected in this process: SELECT reads only their changes.
SNAPSHOTS = SnapshotCache()
SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
FETCH_BATCH = 200


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


def _uid_set(uids: Sequence[int]) -> str:
    """Compact sequence-set text for numbers in the order given ("1:3,7"; "5,3:4"):
    ranges only where the numbers ascend (RFC 5267 §3.2)."""
    pieces: list[str] = []
    start = previous = None
    for uid in uids:
        if start is None:
            start = previous = uid
        elif uid == previous + 1:
            previous = uid
        else:
            pieces.append(f"{start}" if start == previous else f"{start}:{previous}")
            start = previous = uid
    if start is not None:
        pieces.append(f"{start}" if start == previous else f"{start}:{previous}")
    return ",".join(pieces)


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
        # Keywords the client was told of in FLAGS since SELECT (RFC 3501 §7.2.6).
        self.keywords_told: set[str] = set()
        self.bad_commands = 0
        self.commands_before_auth = 0
        self._data = asyncio.Event()
        self._changed = asyncio.Event()
        self._news = 0  # notify.news_mark() of the latest change event
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._busy = False
        self.idling = False
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
        if self.framer.buffered() > 4 * settings.MAILHOST_IMAP_MAX_LINE and \
                self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._closed = True
        self._data.set()
        return None

    def connection_lost(self, error: Exception | None) -> None:
        self._closed = True
        self._data.set()
        self._writable.set()
        self._changed.set()
        log.info("disconnect listener=%s peer=%s", self.listener, self.peer)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

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
        await self._writable.wait()

    def untagged(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self._write(b"* " + line + b"\r\n")

    # --- reading ---------------------------------------------------------------
    async def _wait_data(self) -> None:
        self._data.clear()
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
        await asyncio.wait_for(self._data.wait(), settings.MAILHOST_IMAP_TIMEOUT)

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
                "WITHIN", "METADATA"]
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
        if self.state == SELECTED:
            self.state = AUTHENTICATED

    def _on_change(self, event: events.FolderChanged) -> None:
        if self.view is not None and event.folder_id == self.view.folder_id:
            self._news = news_mark()
            self._changed.set()

    def look_again(self) -> None:
        """An explicit poll (NOOP, CHECK): the answer reads the folder even
        without news, since news of another process's change may still be on
        its way (the poller's tick without Redis). RFC 3501 §6.1.2: NOOP is the
        client's poll for new messages and status updates."""
        if self.view is not None:
            self._news = news_mark()
            self._changed.set()

    async def refresh(self, *, allow_expunge: bool) -> Updates | None:
        """Bring the view up to date and tell the client. A read that another
        session started after this one's latest news will do: every change
        whose event came before it is in it, later ones bring news again."""
        view = self.view
        if view is None:
            return None
        if not self._changed.is_set():
            # No change event since the last look (events come at once from
            # this process, by Redis or the poller from others): no query.
            # Expunges held back during FETCH/STORE/SEARCH are told now.
            if allow_expunge and view.pending_expunge:
                self._announce(view.apply(
                    FolderChanges(view.highestmodseq, view.uidnext, [], []), allow_expunge=True))
            return None
        self._changed.clear()
        changes = await watcher().folder_changes(view.folder_id, view.highestmodseq,
                                                 self._news)
        if changes is None:
            # RFC 3501 §7.1.5: the folder is gone under us.
            self.untagged("BYE the selected folder was deleted")
            self._close()
            return None
        recent = (0, 0)
        last = view.uids[-1] if view.uids else 0
        if not view.readonly and not self.rev2 and any(
                row[0] > last for row in changes.changed):
            recent = await watcher().claim_recent(view.folder_id, changes.uidnext)
        updates = view.apply(changes, allow_expunge=allow_expunge, recent=recent)
        self._announce(updates)
        return updates

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
            if self.qresync or self.condstore:
                items.insert(0, f"UID {uid}")
            self.untagged(f"{position + 1} FETCH ({' '.join(items)})")

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
            # RFC 3501 §6.4.8: a sequence number past the last message is an error.
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
    changes = await _sync(store.folder_changes)(folder.pk, view.highestmodseq)
    if changes is None:
        raise No(f"no folder named {cmd.args['mailbox']}", "NONEXISTENT")
    # \Recent is gone in IMAP4rev2 (RFC 9051 §2.3.2): such a session claims none.
    # EXAMINE shows what is recent without claiming it (RFC 3501 §6.3.2: read-only
    # access does not clear \Recent), so a later SELECT still gets it.
    if session.rev2:
        recent = (0, 0)
    elif readonly:
        recent = (folder.recent_uid, folder.uidnext)
    else:
        recent = await watcher().claim_recent(folder.pk, changes.uidnext)
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
    uidvalidity, modseq, known, _match = params
    if uidvalidity != view.uidvalidity:
        return
    largest = view.uids[-1] if view.uids else 0
    vanished = await _sync(store.expunged_since)(view.folder_id, modseq)
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
    for line, folder in lines:
        session.untagged(line)
        if statuses and folder is not None:
            # RFC 5819: STATUS after the LIST line of each selectable folder.
            await _status_of(session, folder, statuses)


async def _status_of(session: IMAPSession, folder: Folder, items: list[str]) -> None:
    values = await _sync(store.folder_status)(folder, items)
    text = " ".join(f"{item} {values[item]}" for item in items)
    session.untagged(b"STATUS " + session.encode_name(folder.name) + f" ({text})".encode())


@command("STATUS", AUTHED)
async def status(session: IMAPSession, cmd: Command) -> None:
    folder = await session.folder_named(cmd.args["mailbox"])
    items = cmd.args["items"]
    if "APPENDLIMIT" in items:
        items = [i for i in items if i != "APPENDLIMIT"]
        values = await _sync(store.folder_status)(folder, items) if items else {}
        values["APPENDLIMIT"] = settings.MAILHOST_IMAP_MAX_LITERAL
        items = [*items, "APPENDLIMIT"]
        text = " ".join(f"{item} {values[item]}" for item in items)
        session.untagged(b"STATUS " + session.encode_name(folder.name) + f" ({text})".encode())
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
        rows = store.message_rows(folder.pk, [url.uid], ["blob_id", "blob__bodystructure"])
        if (url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity) or not rows:
            raise No("the URL names no message", f"BADURL {shown}")
        filed.read_bytes(rows)
        raw = rows[0]["raw"]
        section = url.section
        data = fmt.section_bytes(raw, rows[0]["blob__bodystructure"], section.part,
                                 section.text, section.fields)
        if data is None:
            raise No("the URL names no message part", f"BADURL {shown}")
        if url.partial is not None:
            origin, length = url.partial
            data = data[origin:] if length is None else data[origin:origin + length]
        out.append(data)
    return b"".join(out)


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


@command("EXPUNGE", {SELECTED})
async def expunge(session: IMAPSession, cmd: Command) -> None:
    view = session.writable_view()
    await run_store_call(store.expunge, Folder(pk=view.folder_id))


@command("UID EXPUNGE", {SELECTED})
async def uid_expunge(session: IMAPSession, cmd: Command) -> None:
    view = session.writable_view()
    uids = [view.uids[p] for p in session.positions(cmd.args["seqs"], uid=True)]
    if uids:
        await run_store_call(store.expunge, Folder(pk=view.folder_id), uids)


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
        fields.update(_ROW_FIELDS.get(att.name, ()))
    need_body = any(_needs_body(a) for a in atts)
    if need_body:
        fields.update(("blob_id", "blob__bodystructure"))
    for start in range(0, len(positions), FETCH_BATCH):
        batch = positions[start:start + FETCH_BATCH]
        uids = [view.uids[p] for p in batch]
        rows: dict[int, dict] = {}
        if fields:
            found = await _sync(_load_rows)(view.folder_id, uids, sorted(fields), need_body)
            rows = {row["uid"]: row for row in found}
        out = []  # one write per batch, not per message
        for position in batch:
            message_uid = view.uids[position]
            row = rows.get(message_uid)
            if fields and row is None:
                continue  # expunged by another session, not yet told (RFC 3501 §7.4.1)
            items = [_fetch_item(session, att, position, row, message_uid in seen_now)
                     for att in atts]
            out.append(b"* %d FETCH (%s)\r\n" % (position + 1, b" ".join(items)))
        session._write(b"".join(out))
        await session._drain()
    return None


def _load_rows(folder_id: int, uids: list[int], fields: list[str], need_body: bool) -> list:
    rows = store.message_rows(folder_id, uids, fields)
    if need_body:
        filed.read_bytes(rows)
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
    structure = row["blob__bodystructure"]
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
    data = fmt.section_bytes(raw, structure, section.part, "") or b""
    if section.part:
        part = mime.find_part(structure, list(section.part))
        if part is not None and not part["parts"]:
            decoded = mime.decode_body(data, part["encoding"])
            if decoded is None:
                raise No(f"cannot decode {part['encoding']}", "UNKNOWN-CTE")
            data = decoded
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
    if searching.uses_modseq(key):
        session.enable_condstore()
    positions = await searching.run(session, key)
    numbers = [view.uids[p] if uid else p + 1 for p in positions]
    with_modseq = searching.uses_modseq(key) and bool(positions)
    modseq = ""
    if with_modseq:
        modseq = f" (MODSEQ {max(view.modseqs[p] for p in positions)})"
    options = args["return"]
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
    parts = _esearch_parts(cmd.tag, uid, numbers, options)
    if with_modseq:
        # RFC 4731 §3.2 / RFC 7162 §3.1.5: with only MIN and/or MAX, the
        # highest MODSEQ of the messages returned; otherwise of all matches.
        returned = ([positions[0]] if "MIN" in options else []) + \
            ([positions[-1]] if "MAX" in options else [])
        if {"ALL", "COUNT"} & set(options) or not returned:
            returned = positions
        parts.append(f"MODSEQ {max(view.modseqs[p] for p in returned)}")
    session.untagged(" ".join(parts))
    return None


def _esearch_parts(tag: str, uid: bool, numbers: list[int], options: list[str]) -> list[str]:
    """An ESEARCH response (RFC 4731 §3.1) for numbers in result order: SEARCH's
    ascending, ESORT's sorted (RFC 5267 §3.1: MIN and MAX are the first and
    last sorted; ALL keeps the order, §3.2: ranges only where ascending)."""
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
    return parts


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
    positions = await searching.run(session, args["key"])
    uids = [view.uids[p] for p in positions]
    fields = ordering.THREAD_FIELDS if threader else ordering.SORT_FIELDS
    rows = {row["uid"]: row for row in await _sync(store.message_rows)(
        view.folder_id, uids, fields)}
    items = [(view.uids[p] if uid else p + 1, rows[view.uids[p]])
             for p in positions if view.uids[p] in rows]
    if threader is not None:
        session.untagged(f"THREAD {threader(items)}".rstrip())
    else:
        numbers = ordering.sort(items, args["criteria"])
        if args["return"] is not None:
            session.untagged(" ".join(_esearch_parts(cmd.tag, uid, numbers, args["return"])))
        else:
            session.untagged("SORT" + "".join(f" {n}" for n in numbers))


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
    while True:
        line = session.framer.read_line()
        if line is not None:
            if line.rstrip(b"\r\n").upper() == b"DONE":
                return "OK IDLE terminated"
            raise Bad("expected DONE")
        if session._closed:
            raise ConnectionError("closed")
        if session._changed.is_set():
            await session.refresh(allow_expunge=True)
            continue
        session._data.clear()
        if session.transport is not None:
            session.transport.resume_reading()
        waiters = [asyncio.ensure_future(session._data.wait()),
                   asyncio.ensure_future(session._changed.wait())]
        done, pending = await asyncio.wait(
            waiters, timeout=settings.MAILHOST_IMAP_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if not done:
            raise TimeoutError


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


