"""Start and stop the mail listeners inside one event loop.

Each listener is a name, a port setting, whether TLS starts at once
(implicit, RFC 8314) and a protocol factory from the protocol's own app.
Tests start them on port 0 and read back the bound ports."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apps.imap.session import protocol_factory as imap_protocol_factory
from apps.pop3.server import pop3_protocol_factory
from apps.smtp.server import mx_protocol_factory
from apps.smtp.submission import smtps_protocol_factory, submission_protocol_factory
from apps.store import health
from mailhost.asyncdb import database_sync_to_async

log = logging.getLogger("mailhost.listeners")

FactoryMaker = Callable[[ssl.SSLContext | None, str], Callable[[], asyncio.Protocol]]


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    make_factory: FactoryMaker
    implicit_tls: bool = False


# The protocol issues add their listeners here (IMAP, POP3, submission).
LISTENERS: dict[str, ListenerSpec] = {
    "smtp": ListenerSpec("smtp", mx_protocol_factory),
    "pop3": ListenerSpec("pop3", pop3_protocol_factory),
    "pop3s": ListenerSpec("pop3s", pop3_protocol_factory, implicit_tls=True),
    "imap": ListenerSpec("imap", imap_protocol_factory),
    "imaps": ListenerSpec("imaps", imap_protocol_factory, implicit_tls=True),
    "submission": ListenerSpec("submission", submission_protocol_factory),
    "smtps": ListenerSpec("smtps", smtps_protocol_factory, implicit_tls=True),
}


@dataclass
class RunningListener:
    spec: ListenerSpec
    server: asyncio.Server
    sessions: set[Any] = field(default_factory=set)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]


def _tracked(factory: Callable[[], asyncio.Protocol], sessions: set[Any]) -> Callable[[], Any]:
    """Wrap a protocol factory so that the listener knows its live sessions."""

    def make() -> asyncio.Protocol:
        protocol = factory()
        sessions.add(protocol)
        original = protocol.connection_lost

        def connection_lost(error: Exception | None) -> None:
            sessions.discard(protocol)
            original(error)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    return make


async def start_listeners(
    ports: dict[str, int], *, host: str, tls_context: ssl.SSLContext | None,
    sockets: dict[str, socket.socket] | None = None,
) -> list[RunningListener]:
    """Start the named listeners (``ports``: name -> port, 0 for a free one),
    on the listening ``sockets`` given (shared by several processes) or on
    sockets of their own."""
    loop = asyncio.get_running_loop()
    running = []
    for name, port in ports.items():
        spec = LISTENERS[name]
        sessions: set[Any] = set()
        factory = _tracked(spec.make_factory(tls_context, name), sessions)
        ssl_context = tls_context if spec.implicit_tls else None
        if sockets and name in sockets:
            server = await loop.create_server(factory, sock=sockets[name], ssl=ssl_context)
        else:
            server = await loop.create_server(factory, host=host, port=port,
                                              ssl=ssl_context, reuse_address=True)
        listener = RunningListener(spec, server, sessions)
        if sockets is None:  # shared sockets are announced once, by the parent
            log.info("listening name=%s address=%s port=%d", name, host, listener.port)
        running.append(listener)
    return running


async def send_heartbeats(listeners: list[RunningListener], interval: float) -> None:
    """Tell the dashboard every ``interval`` seconds that this process and its
    listeners are up (apps/store/health.py), until cancelled."""
    while True:
        detail = {"listeners": {lst.spec.name: {"port": lst.port, "serving":
                                                lst.server.is_serving()}
                                for lst in listeners}}
        try:
            await database_sync_to_async(health.beat)("listeners", detail=detail)
        except Exception:
            log.exception("heartbeat failed")
        await asyncio.sleep(interval)


async def stop_listeners(listeners: list[RunningListener], *, grace: float) -> None:
    """Stop accepting, ask idle sessions to leave, wait for the rest (bounded)."""
    for listener in listeners:
        listener.server.close()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        live = [s for listener in listeners for s in listener.sessions]
        if not live:
            break
        for session in live:
            request = getattr(session, "request_shutdown", None)
            if request is not None:
                request()
        await asyncio.sleep(0.1)
    for listener in listeners:
        for session in list(listener.sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.abort()
        await listener.server.wait_closed()
