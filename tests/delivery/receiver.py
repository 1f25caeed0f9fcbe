"""A receiving SMTP server for delivery tests: aiosmtpd on 127.0.0.1, port 0,
in a thread of its own, answering each recipient as the test scripts it."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool


@dataclass
class Script:
    # recipient -> replies for its successive attempts (then 250)
    rcpt: dict[str, list[str]] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    # DATA commands to leave unanswered (until the client goes away)
    stall_data: int = 0
    # or: leave the DATA unanswered that comes after this many messages
    stall_after: int | None = None
    stalled: threading.Event = field(default_factory=threading.Event)
    # Advertise PIPELINING (RFC 2920): the client then sends MAIL, RCPT and
    # DATA in one group; aiosmtpd answers each in turn either way.
    pipelining: bool = True
    # Advertise REQUIRETLS (RFC 8689 §2) once the session is under TLS.
    requiretls: bool = False


class _Handler:
    def __init__(self, script: Script) -> None:
        self.script = script

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extensions = ["250-DSN", *(["250-PIPELINING"] if self.script.pipelining else []),
                      *(["250-REQUIRETLS"] if self.script.requiretls and session.ssl else [])]
        return [*responses[:-1], *extensions, responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        queue = self.script.rcpt.get(address)
        if queue:
            reply = queue.pop(0)
            if not reply.startswith("2"):
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        stall_now = (self.script.stall_after is not None
                     and len(self.script.messages) == self.script.stall_after)
        if self.script.stall_data > 0 or stall_now:
            self.script.stall_data = max(self.script.stall_data - 1, 0)
            self.script.stall_after = None
            self.script.stalled.set()
            await asyncio.sleep(3600)  # cancelled when the client disconnects
        self.script.messages.append(Received(
            envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or b"",
            list(envelope.mail_options), list(envelope.rcpt_options), session.ssl is not None))
        return "250 2.0.0 Queued"


class _DsnSMTP(SMTP):
    """Takes the RFC 3461 parameters that aiosmtpd would refuse, keeping them."""

    def _getparams(self, params):
        wanted = ("RET", "ENVID", "NOTIFY", "ORCPT", "REQUIRETLS")
        return super()._getparams([p for p in params if p.split("=")[0] not in wanted])

    def connection_made(self, transport):
        if self.transport is None:
            self.script.connections += 1
        super().connection_made(transport)


class Receiver:
    def __init__(self, tls_context: ssl.SSLContext | None) -> None:
        self.script = Script()
        self.tls_context = tls_context
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handler = _Handler(self.script)

        def factory() -> SMTP:
            protocol = _DsnSMTP(handler, hostname="receiver.test", tls_context=self.tls_context,
                                decode_data=False)
            protocol.script = self.script
            return protocol

        server = await self._loop.create_server(factory, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()

    def start(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
