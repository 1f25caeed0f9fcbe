"""The ManageSieve server (RFC 5804): STARTTLS, SASL PLAIN, and the script
commands, each a thin call into ``apps.sieve.services``.

``ManageSieveSession`` is one connection: an asyncio protocol that gathers a
command's lines and literals, parses them with the pure ``protocol`` module
and dispatches to a ``cmd_<VERB>`` method allowed in the current state."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from django.conf import settings

from apps.directory.models import Mailbox
from apps.directory.sasl import decode_plain
from apps.directory.services import aauthenticate, plaintext_auth_allowed
from apps.sieve import services
from apps.sieve.commands import EXTENSIONS
from apps.sieve.protocol import (
    Command,
    ProtocolError,
    capability_lines,
    literal_size,
    parse_command,
    response,
    string,
)
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import Conflict, Invalid, LimitExceeded, MailhostError, NotFound

log = logging.getLogger("mailhost.managesieve")

# RFC 5804 §2: what may be said before and after authentication.
_ANY_STATE = {"CAPABILITY", "LOGOUT", "NOOP"}
UNAUTHENTICATED = _ANY_STATE | {"AUTHENTICATE", "STARTTLS"}
AUTHENTICATED = _ANY_STATE | {"HAVESPACE", "PUTSCRIPT", "LISTSCRIPTS", "SETACTIVE",
                              "GETSCRIPT", "DELETESCRIPT", "RENAMESCRIPT", "CHECKSCRIPT",
                              "UNAUTHENTICATE"}
# Arguments each command takes: "s" a string, "n" a number.
_SIGNATURES = {
    "CAPABILITY": "", "LOGOUT": "", "STARTTLS": "", "LISTSCRIPTS": "", "UNAUTHENTICATE": "",
    "HAVESPACE": "sn", "PUTSCRIPT": "ss", "SETACTIVE": "s", "GETSCRIPT": "s",
    "DELETESCRIPT": "s", "RENAMESCRIPT": "ss", "CHECKSCRIPT": "s",
}

# Said by apps/mailservers/limits.py (RFC 5804 §1.3: BYE with TRYLATER).
TOO_MANY_CONNECTIONS = response("BYE", "too many connections, try again later", "TRYLATER")
NO_COMMAND_IN_TIME = response("BYE", "no command in time")


class _Closed(Exception):
    pass


class _Refusal(Exception):
    """A command answered NO (with an RFC 5804 §1.3 response code)."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text, self.code = text, code


def _code_of(error: MailhostError) -> str:
    """RFC 5804 §1.3 response codes for the service layer's errors."""
    if isinstance(error, services.ScriptActive):
        return "ACTIVE"
    if isinstance(error, NotFound):
        return "NONEXISTENT"
    if isinstance(error, Conflict):
        return "ALREADYEXISTS"
    if isinstance(error, LimitExceeded):
        quota = error.context.get("quota")
        return f"QUOTA/{quota}" if quota else "QUOTA"
    return ""


class ManageSieveSession(asyncio.Protocol):
    """One ManageSieve connection."""

    def __init__(self, tls_context: ssl.SSLContext | None, listener: str) -> None:
        self.tls_context = tls_context
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.tls = False
        self.peer = "unknown"
        self.mailbox: Mailbox | None = None
        self.busy = False
        self.shutdown_requested = False
        self.bad_commands = 0
        self._buffer = bytearray()
        self._input = asyncio.Event()
        self._eof = False
        self._task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:
            return  # the TLS transport after STARTTLS: the session goes on
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.tls = transport.get_extra_info("sslcontext") is not None
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        log.info("connect listener=%s peer=%s", self.listener, self.peer)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._input.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._input.set()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self._eof = True
        self._input.set()

    def request_shutdown(self) -> None:
        self.shutdown_requested = True
        if not self.busy and self.transport is not None:
            self.transport.write(response("BYE", "server shutting down"))
            self.transport.close()

    # --- reading commands ---------------------------------------------------------
    async def _wait_input(self) -> None:
        if self._eof:
            raise _Closed
        self._input.clear()
        await asyncio.wait_for(self._input.wait(), settings.MAILHOST_MANAGESIEVE_IDLE_TIMEOUT)

    async def _readline(self) -> bytes:
        limit = settings.MAILHOST_MANAGESIEVE_MAX_LINE
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > limit:
                self._buffer.clear()  # the rest of the line is refused as it comes
                raise ProtocolError("line too long")
            await self._wait_input()
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        if len(line) > limit:
            raise ProtocolError("line too long")
        return line

    async def _read_command(self) -> bytes:
        """A command's lines with the literals they announce (RFC 5804 §4)."""
        data = bytearray(await self._readline())
        while (size := literal_size(bytes(data))) is not None:
            if size > settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE:
                # Its octets are on their way ("{N+}" waits for no go-ahead):
                # refused before they are read, and the connection closed.
                self._send(response("BYE", "literal larger than "
                                    f"{settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE} octets",
                                    "QUOTA/MAXSIZE"))
                raise _Closed
            while len(self._buffer) < size:
                await self._wait_input()
            data += self._buffer[:size]
            del self._buffer[:size]
            data += await self._readline()
        return bytes(data)

    def _send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise _Closed
        self.transport.write(data)

    # --- the command loop ---------------------------------------------------------
    async def _serve(self) -> None:
        try:
            self._send(self._capabilities() + response("OK", "Mailhost ManageSieve ready"))
            while not self.shutdown_requested:
                try:
                    raw = await self._read_command()
                    self.busy = True
                    await self._dispatch(parse_command(raw))
                except ProtocolError as error:
                    self._bad(str(error))
                except _Refusal as error:
                    self._send(response("NO", error.text, error.code))
                finally:
                    self.busy = False
        except (_Closed, ConnectionError):
            pass
        except TimeoutError:
            log.info("idle timeout listener=%s peer=%s", self.listener, self.peer)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(response("BYE", "idle for too long"))
        except Exception:
            log.exception("managesieve session failed peer=%s", self.peer)
        finally:
            if self.transport is not None:
                self.transport.close()
            log.info("disconnect listener=%s peer=%s", self.listener, self.peer)

    def _bad(self, reason: str) -> None:
        self.bad_commands += 1
        if self.bad_commands >= settings.MAILHOST_MANAGESIEVE_MAX_BAD_COMMANDS:
            self._send(response("BYE", f"{reason}; too many bad commands"))
            raise _Closed
        self._send(response("NO", reason))

    async def _dispatch(self, command: Command) -> None:
        allowed = AUTHENTICATED if self.mailbox is not None else UNAUTHENTICATED
        if command.verb not in allowed:
            if command.verb in AUTHENTICATED | UNAUTHENTICATED:
                state = "after" if self.mailbox is not None else "before"
                self._bad(f"{command.verb} is not allowed {state} authentication")
            else:
                self._bad(f"unknown command {command.verb[:20]}")
            return
        signature = _SIGNATURES.get(command.verb)
        if signature is not None:
            kinds = "".join("n" if isinstance(a, int) else "s" for a in command.args)
            if kinds != signature:
                self._bad(f"{command.verb} takes {len(signature)} argument(s) of the right kind")
                return
        handler: Callable[[Command], Awaitable[None]] = getattr(self, f"cmd_{command.verb}")
        try:
            await handler(command)
        except MailhostError as error:
            self._send(response("NO", error.message, _code_of(error)))

    # --- any state ----------------------------------------------------------------
    def _capabilities(self) -> bytes:
        # RFC 5804 §1.7.
        capabilities: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", "Mailhost"), ("SIEVE", " ".join(EXTENSIONS))]
        if self.mailbox is None and plaintext_auth_allowed(tls=self.tls, remote_ip=self.peer):
            capabilities.append(("SASL", "PLAIN"))
        elif self.mailbox is None:
            capabilities.append(("SASL", ""))
        if not self.tls and self.tls_context is not None:
            capabilities.append(("STARTTLS", None))
        capabilities += [("MAXREDIRECTS", "10"), ("VERSION", "1.0")]
        return capability_lines(capabilities)

    async def cmd_CAPABILITY(self, command: Command) -> None:
        self._send(self._capabilities() + response("OK", "capability completed"))

    async def cmd_NOOP(self, command: Command) -> None:
        if len(command.args) == 1 and isinstance(command.args[0], str):
            # RFC 5804 §2.14: the tag comes back in a TAG response code.
            tag = string(command.args[0]).decode("utf-8")
            self._send(response("OK", "done", f"TAG {tag}"))
        elif command.args:
            self._bad("NOOP takes at most one string")
        else:
            self._send(response("OK", "done"))

    async def cmd_LOGOUT(self, command: Command) -> None:
        self._send(response("OK", "logout completed"))
        raise _Closed

    # --- before authentication ----------------------------------------------------
    async def cmd_STARTTLS(self, command: Command) -> None:
        if self.tls or self.tls_context is None:
            self._send(response("NO", "TLS is not available" if not self.tls
                                else "TLS is already active"))
            return
        assert self.transport is not None
        self._send(response("OK", "begin TLS negotiation"))
        # RFC 5804 §2.2 (and CVE-2011-0411): what came before the handshake
        # is not read as if it came over TLS.
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
        # RFC 5804 §2.2: the capabilities again, then OK.
        self._send(self._capabilities() + response("OK", "TLS negotiation successful"))

    async def cmd_AUTHENTICATE(self, command: Command) -> None:
        args = command.args
        if not args or len(args) > 2 or not all(isinstance(a, str) for a in args):
            self._bad("AUTHENTICATE takes a mechanism and an optional initial response")
            return
        mechanism = str(args[0]).upper()
        if mechanism != "PLAIN":
            self._send(response("NO", f"unsupported SASL mechanism {mechanism[:20]}"))
            return
        if not plaintext_auth_allowed(tls=self.tls, remote_ip=self.peer):
            # RFC 5804 §2.1: ENCRYPT-NEEDED.
            self._send(response("NO", "use STARTTLS first", "ENCRYPT-NEEDED"))
            return
        if len(args) == 2:
            answer = str(args[1])
        else:
            self._send(b'""\r\n')  # RFC 5804 §2.1: an empty challenge
            reply = parse_command(b"X " + await self._read_command())
            if len(reply.args) != 1 or not isinstance(reply.args[0], str):
                self._bad("expected a string in answer to the challenge")
                return
            answer = reply.args[0]
        if answer == "*":
            self._send(response("NO", "authentication cancelled"))
            return
        try:
            authzid, authcid, password = decode_plain(answer)
        except Invalid as error:
            self._send(response("NO", error.message))
            return
        if authzid and authzid != authcid:
            self._send(response("NO", "authorization identity must be the login", "AUTH"))
            return
        try:
            mailbox = await aauthenticate(authcid, password, remote_ip=self.peer,
                                          protocol="managesieve")
        except Exception:
            log.exception("authentication failed with an error peer=%s", self.peer)
            self._send(response("NO", "authentication is unavailable, try again later",
                                "TRYLATER"))
            return
        if mailbox is None:
            self._send(response("NO", "authentication failed", "AUTH"))
            return
        self.mailbox = mailbox
        log.info("login mailbox=%s peer=%s", mailbox.address, self.peer)
        self._send(response("OK", "authenticated"))

    # --- after authentication -----------------------------------------------------
    async def cmd_UNAUTHENTICATE(self, command: Command) -> None:
        self.mailbox = None  # RFC 5804 §2.14.1
        self._send(response("OK", "unauthenticated"))

    @property
    def _owner(self) -> Mailbox:
        assert self.mailbox is not None
        return self.mailbox

    async def cmd_HAVESPACE(self, command: Command) -> None:
        name, size = command.args
        await database_sync_to_async(services.have_space)(self._owner, str(name), int(size))
        self._send(response("OK", "putscript would succeed"))

    async def cmd_PUTSCRIPT(self, command: Command) -> None:
        name, content = command.args
        await database_sync_to_async(services.put_script)(self._owner, str(name), str(content))
        self._send(response("OK", "script stored"))

    async def cmd_CHECKSCRIPT(self, command: Command) -> None:
        services.check_script(str(command.args[0]))
        self._send(response("OK", "script is valid"))

    async def cmd_LISTSCRIPTS(self, command: Command) -> None:
        scripts = await database_sync_to_async(services.list_scripts)(self._owner)
        self._send(b"".join(string(s.name) + (b" ACTIVE" if s.active else b"") + b"\r\n"
                            for s in scripts) + response("OK", "listscripts completed"))

    async def cmd_SETACTIVE(self, command: Command) -> None:
        await database_sync_to_async(services.set_active)(self._owner, str(command.args[0]))
        self._send(response("OK", "active script set"))

    async def cmd_GETSCRIPT(self, command: Command) -> None:
        script = await database_sync_to_async(services.get_script)(
            self._owner, str(command.args[0]))
        raw = script.content.encode("utf-8")
        # RFC 5804 §2.9: the script as a literal, then OK.
        self._send(b"{%d}\r\n" % len(raw) + raw + b"\r\n" + response("OK", "getscript completed"))

    async def cmd_DELETESCRIPT(self, command: Command) -> None:
        await database_sync_to_async(services.delete_script)(self._owner, str(command.args[0]))
        self._send(response("OK", "script deleted"))

    async def cmd_RENAMESCRIPT(self, command: Command) -> None:
        old, new = command.args
        await database_sync_to_async(services.rename_script)(self._owner, str(old), str(new))
        self._send(response("OK", "script renamed"))


def managesieve_protocol_factory(
    tls_context: ssl.SSLContext | None, listener: str = "managesieve",
) -> Callable[[], ManageSieveSession]:
    """Protocol factory for ``loop.create_server``."""

    def factory() -> ManageSieveSession:
        return ManageSieveSession(tls_context, listener)

    return factory
