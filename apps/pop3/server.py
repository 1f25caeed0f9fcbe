"""The POP3 server (RFC 1939) with CAPA and response codes (RFC 2449), STLS
(RFC 2595) and SASL PLAIN (RFC 5034).

``Pop3Session`` is one connection: an asyncio protocol that splits the input
into lines, parses them with the pure ``protocol`` module and dispatches to a
``pop3_<VERB>`` method allowed in the current state. Everything that touches
the database or the blobs goes through ``apps.pop3.services``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable

from django.conf import settings

from apps.directory.models import Mailbox
from apps.directory.services import aauthenticate, plaintext_auth_allowed
from apps.pop3 import services
from apps.pop3.maildrop import Maildrop
from apps.pop3.protocol import (
    Command,
    CommandError,
    decode_sasl_plain,
    err,
    multiline,
    ok,
    parse_command,
    stuffed,
    to_crlf,
)

log = logging.getLogger("mailhost.pop3")


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


# RFC 1939 §§4-6, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4: what each state accepts.
# UPDATE accepts nothing: the session ends there.
ALLOWED: dict[State, frozenset[str]] = {
    State.AUTHORIZATION: frozenset({"USER", "PASS", "AUTH", "STLS", "CAPA", "QUIT"}),
    State.TRANSACTION: frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT",
                                  "TOP", "UIDL", "CAPA"}),
    State.UPDATE: frozenset(),
}

# RFC 2449 §8 and RFC 3206 response codes.
IN_USE = "IN-USE"
AUTH = "AUTH"
SYS_TEMP = "SYS/TEMP"

# Input beyond this many unread octets pauses reading (a pipelining flood).
_READ_HIGH_WATER = 64 * 1024
# Replies to pipelined commands are gathered up to this many octets.
_WRITE_BATCH = 256 * 1024


class _LineTooLong(Exception):
    pass


class _Closed(Exception):
    pass


class Pop3Session(asyncio.Protocol):
    """One POP3 connection."""

    def __init__(self, tls_context: ssl.SSLContext | None, listener: str) -> None:
        self.tls_context = tls_context
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.state = State.AUTHORIZATION
        self.tls = False
        self.peer = "unknown"
        self.user: str | None = None  # from USER, waiting for PASS
        self.mailbox: Mailbox | None = None
        self.maildrop: Maildrop | None = None
        self.lock_token: str | None = None
        self.bad_commands = 0
        self.busy = False
        self.shutdown_requested = False
        self._buffer = bytearray()
        self._output = bytearray()
        self._input = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._eof = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:
            return  # the TLS transport after STLS: the session goes on
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.tls = transport.get_extra_info("sslcontext") is not None
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        log.info("connect listener=%s peer=%s", self.listener, self.peer)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._input.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._input.set()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self._eof = True
        self._input.set()
        self._can_write.set()
        log.info("disconnect listener=%s peer=%s", self.listener, self.peer)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def request_shutdown(self) -> None:
        """Graceful stop: an idle session is closed as a dropped connection
        (nothing deleted, RFC 1939 §6); a command under way finishes first."""
        self.shutdown_requested = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    # --- lines in, replies out ----------------------------------------------------
    async def _readline(self) -> bytes:
        limit = settings.MAILHOST_POP3_MAX_LINE
        discarding = False
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                if self.transport is not None and len(self._buffer) < _READ_HIGH_WATER:
                    self.transport.resume_reading()
                if discarding or len(line) > limit:
                    raise _LineTooLong
                return line
            if len(self._buffer) > limit:
                discarding = True
                self._buffer.clear()
                if self.transport is not None:
                    self.transport.resume_reading()
            if self._eof:
                raise _Closed
            await self._flush()
            self._input.clear()
            await asyncio.wait_for(self._input.wait(), settings.MAILHOST_POP3_IDLE_TIMEOUT)

    async def _send(self, data: bytes) -> None:
        """Queue a reply. While pipelined commands wait in the input (RFC 2449
        §6.6), replies are gathered and sent together: one system call for many
        small RETRs instead of one each."""
        self._output += data
        if b"\n" not in self._buffer or len(self._output) >= _WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if not self._output:
            return
        if self.transport is None or self.transport.is_closing():
            raise _Closed
        self.transport.write(bytes(self._output))
        self._output.clear()
        await self._can_write.wait()

    # --- the command loop ---------------------------------------------------------
    async def _serve(self) -> None:
        try:
            await self._send(ok("Mailhost POP3 server ready"))
            while self.state is not State.UPDATE and not self.shutdown_requested:
                try:
                    line = await self._readline()
                except _LineTooLong:
                    await self._bad(err(f"line longer than {settings.MAILHOST_POP3_MAX_LINE}"
                                        " octets"))
                    continue
                self.busy = True
                try:
                    await self._dispatch(line)
                finally:
                    self.busy = False
        except (_Closed, ConnectionError):
            pass
        except TimeoutError:
            # RFC 1939 §3: the autologout timer closes without UPDATE and without a reply.
            log.info("idle timeout listener=%s peer=%s", self.listener, self.peer)
        except Exception:
            log.exception("pop3 session failed peer=%s", self.peer)
        finally:
            await self._end()

    async def _dispatch(self, line: bytes) -> None:
        try:
            command = parse_command(line)
        except CommandError as error:
            await self._bad(err(error.reason))
            return
        if command.verb not in ALLOWED[self.state]:
            await self._bad(err(f"{command.verb} is not valid in the {self.state.value} state"))
            return
        handler: Callable[[Command], Awaitable[None]] = getattr(self, f"pop3_{command.verb}")
        try:
            await handler(command)
        except CommandError as error:
            await self._send(err(error.reason, error.code))

    async def _bad(self, reply: bytes) -> None:
        self.bad_commands += 1
        if self.bad_commands >= settings.MAILHOST_POP3_MAX_BAD_COMMANDS:
            await self._send(reply[:-2] + b"; too many bad commands, closing\r\n")
            raise _Closed
        await self._send(reply)

    async def _release_lock(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.mailbox is not None and self.lock_token is not None:
            token, self.lock_token = self.lock_token, None
            try:
                await asyncio.shield(services.arelease_lock(self.mailbox.pk, token))
            except Exception:
                # It expires by itself after MAILHOST_POP3_LOCK_SECONDS.
                log.exception("could not release the maildrop lock of %s", self.mailbox.address)

    async def _end(self) -> None:
        await self._release_lock()
        if self.transport is not None:
            if self._output and not self.transport.is_closing():
                self.transport.write(bytes(self._output))
            self.transport.close()

    # --- AUTHORIZATION --------------------------------------------------------------
    def _plaintext_allowed(self) -> bool:
        """RFC 2595 §2.3: no clear-text password before TLS, except from this host."""
        return plaintext_auth_allowed(tls=self.tls, remote_ip=self.peer)

    def _refuse_plaintext(self) -> bytes:
        # RFC 3206 §5: [AUTH] covers logins refused by policy.
        return err("Plaintext authentication needs TLS: use STLS first", AUTH)

    async def pop3_USER(self, command: Command) -> None:
        if not self._plaintext_allowed():
            await self._send(self._refuse_plaintext())
            return
        self.user = str(command.args[0])
        await self._send(ok("send PASS"))

    async def pop3_PASS(self, command: Command) -> None:
        user, self.user = self.user, None
        if user is None:
            await self._bad(err("USER first"))
            return
        await self._login(user, str(command.args[0]))

    async def pop3_AUTH(self, command: Command) -> None:
        if not command.args:
            # AUTH alone: the mechanism list, as Dovecot and Cyrus answer it; clients ask.
            await self._send(multiline(ok("SASL mechanisms follow"),
                                       ["PLAIN"] if self._plaintext_allowed() else []))
            return
        mechanism = str(command.args[0]).upper()
        if mechanism != "PLAIN":
            await self._send(err(f"unsupported SASL mechanism {mechanism[:20]}"))
            return
        if not self._plaintext_allowed():
            await self._send(self._refuse_plaintext())
            return
        if len(command.args) == 2:
            response = str(command.args[1])
        else:
            await self._send(b"+ \r\n")  # RFC 5034 §4: an empty challenge
            try:
                response = (await self._readline()).rstrip(b"\r\n").decode("ascii")
            except (_LineTooLong, UnicodeDecodeError):
                await self._bad(err("invalid SASL response"))
                return
        if response == "*":
            await self._send(err("authentication cancelled"))  # RFC 5034 §4
            return
        authzid, authcid, password = decode_sasl_plain(response)
        if authzid and authzid != authcid:
            await self._send(err("authorization identity must be the login", AUTH))
            return
        await self._login(authcid, password)

    async def _login(self, login: str, secret: str) -> None:
        try:
            mailbox = await aauthenticate(login, secret, remote_ip=self.peer, protocol="pop3")
        except Exception:
            log.exception("authentication failed with an error peer=%s", self.peer)
            await self._send(err("authentication is unavailable, try again later", SYS_TEMP))
            return
        if mailbox is None:
            await self._send(err("authentication failed", AUTH))
            return
        token = secrets.token_hex(16)
        try:
            acquired = await services.aacquire_lock(
                mailbox.pk, token, seconds=settings.MAILHOST_POP3_LOCK_SECONDS)
        except Exception:
            log.exception("could not lock the maildrop of %s", mailbox.address)
            await self._send(err("mailbox unavailable, try again later", SYS_TEMP))
            return
        if not acquired:
            # RFC 2449 §8.1.2
            await self._send(err("another POP3 session is using this mailbox", IN_USE))
            return
        self.mailbox, self.lock_token = mailbox, token
        try:
            self.maildrop = await services.aopen_maildrop(mailbox)
        except Exception:
            log.exception("could not open the maildrop of %s", mailbox.address)
            await services.arelease_lock(mailbox.pk, token)
            self.mailbox = self.lock_token = None
            await self._send(err("mailbox unavailable, try again later", SYS_TEMP))
            return
        self.state = State.TRANSACTION
        self._heartbeat = asyncio.get_running_loop().create_task(self._keep_lock())
        count, size = self.maildrop.stat()
        log.info("login mailbox=%s peer=%s messages=%d", mailbox.address, self.peer, count)
        await self._send(ok(f"maildrop has {count} messages ({size} octets)"))

    async def _keep_lock(self) -> None:
        assert self.mailbox is not None and self.lock_token is not None
        seconds = settings.MAILHOST_POP3_LOCK_SECONDS
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                if not await services.arenew_lock(self.mailbox.pk, self.lock_token,
                                                  seconds=seconds):
                    log.warning("maildrop lock of %s was lost", self.mailbox.address)
                    return
            except Exception:
                log.exception("could not renew the maildrop lock")

    async def pop3_STLS(self, command: Command) -> None:
        if self.tls:
            await self._send(err("TLS is already active"))
            return
        if self.tls_context is None:
            await self._send(err("TLS is not available"))
            return
        assert self.transport is not None
        await self._send(ok("begin TLS negotiation"))
        await self._flush()
        # RFC 2595 §4 / CVE-2011-0411: anything sent after STLS but before the
        # handshake is discarded, never read as if it came over TLS. No await
        # between here and start_tls, which stops reading plaintext at once.
        self._buffer.clear()
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, self.tls_context,
                                             server_side=True)
        except (ssl.SSLError, OSError) as error:
            log.info("TLS handshake failed peer=%s: %s", self.peer, error)
            raise _Closed from None
        if transport is None:
            raise _Closed
        self.transport = transport
        self.tls = True
        self.user = None  # RFC 2595 §4: the client starts authorization afresh

    async def pop3_CAPA(self, command: Command) -> None:
        # RFC 2449 §6; what depends on the state is listed only where it applies.
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._plaintext_allowed():
                capabilities += ["USER", "SASL PLAIN"]
            if not self.tls and self.tls_context is not None:
                capabilities.append("STLS")
        capabilities.append("IMPLEMENTATION Mailhost")
        await self._send(multiline(ok("Capability list follows"), capabilities))

    async def pop3_QUIT(self, command: Command) -> None:
        if self.state is State.AUTHORIZATION:
            self.state = State.UPDATE
            await self._send(ok("Mailhost POP3 server signing off"))
            return
        # RFC 1939 §6: the UPDATE state removes what DELE marked.
        self.state = State.UPDATE
        assert self.maildrop is not None and self.mailbox is not None
        assert self.lock_token is not None
        uids = self.maildrop.deleted_uids()
        failed = False
        if uids:
            try:
                await services.aremove_deleted(self.mailbox.pk, self.lock_token,
                                               self.maildrop.folder_id, uids,
                                               leave_copy=self.maildrop.leave_copy)
            except Exception:
                log.exception("could not remove deleted messages of %s", self.mailbox.address)
                failed = True
        # Unlocked before the reply, so that a client that logs in again at
        # once is not told [IN-USE] by its own finished session.
        await self._release_lock()
        if failed:
            await self._send(err("some deleted messages not removed", SYS_TEMP))
            return
        left = len(self.maildrop.entries) - len(uids)
        log.info("quit mailbox=%s removed=%d left=%d", self.mailbox.address, len(uids), left)
        await self._send(ok(f"Mailhost POP3 server signing off ({left} messages left)"))

    # --- TRANSACTION ----------------------------------------------------------------
    @property
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    async def pop3_STAT(self, command: Command) -> None:
        count, size = self._drop.stat()
        await self._send(ok(f"{count} {size}"))

    async def pop3_LIST(self, command: Command) -> None:
        if command.args:
            number = int(command.args[0])
            await self._send(ok(f"{number} {self._drop.get(number).size}"))
            return
        count, size = self._drop.stat()
        await self._send(multiline(ok(f"{count} messages ({size} octets)"),
                                   [f"{n} {e.size}" for n, e in self._drop.live()]))

    async def pop3_UIDL(self, command: Command) -> None:
        if command.args:
            number = int(command.args[0])
            await self._send(ok(f"{number} {self._drop.unique_id(number)}"))
            return
        await self._send(multiline(ok("unique-id listing follows"),
                                   [f"{n} {self._drop.unique_id(n)}"
                                    for n, _ in self._drop.live()]))

    async def _message(self, number: int, top_lines: int | None = None) -> bytes:
        """Message ``number`` with CRLF line ends; only its TOP ``top_lines``
        when that is given."""
        entry = self._drop.get(number)
        try:
            if top_lines is not None:
                return await services.aread_top(entry, top_lines)
            data = await services.aread_message(entry)
        except OSError:
            log.exception("could not read blob %s", entry.blob_id)
            raise CommandError("message unavailable, try again later", SYS_TEMP) from None
        # The wire size (measured once per blob) equals the length exactly when
        # every line already ends in CRLF, as SMTP delivers it: nothing to convert.
        return data if len(data) == entry.size else to_crlf(data)

    async def pop3_RETR(self, command: Command) -> None:
        number = int(command.args[0])
        data = await self._message(number)
        await self._send(ok(f"{len(data)} octets") + stuffed(data))

    async def pop3_TOP(self, command: Command) -> None:
        number, lines = int(command.args[0]), int(command.args[1])
        data = await self._message(number, top_lines=lines)
        await self._send(ok("top of message follows") + stuffed(data))

    async def pop3_DELE(self, command: Command) -> None:
        number = int(command.args[0])
        self._drop.delete(number)
        await self._send(ok(f"message {number} deleted"))

    async def pop3_NOOP(self, command: Command) -> None:
        await self._send(ok())

    async def pop3_RSET(self, command: Command) -> None:
        self._drop.reset()
        count, size = self._drop.stat()
        await self._send(ok(f"maildrop has {count} messages ({size} octets)"))


# Said by apps/mailservers/limits.py to a connection over the limits (RFC 3206 §4:
# SYS/TEMP, a temporary problem on the server's side). A client silent after the
# greeting is closed without a reply, as by the autologout timer (RFC 1939 §3).
TOO_MANY_CONNECTIONS = err("too many connections, try again later", SYS_TEMP)
NO_COMMAND_IN_TIME = b""


def pop3_protocol_factory(
    tls_context: ssl.SSLContext | None, listener: str = "pop3",
) -> Callable[[], Pop3Session]:
    """Protocol factory for ``loop.create_server`` (POP3 and POP3S alike: on
    the implicit-TLS port the transport is TLS from the start)."""

    def factory() -> Pop3Session:
        return Pop3Session(tls_context, listener)

    return factory

