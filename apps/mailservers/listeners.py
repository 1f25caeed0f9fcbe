"""Start and stop the mail listeners inside one event loop.

Each listener is a name, a port setting, whether TLS starts at once
(implicit, RFC 8314) and a protocol factory from the protocol's own app.
Tests start them on port 0 and read back the bound ports. Every connection
passes apps/mailservers/limits.py first: the connection limits and the
greeting timeout, in each protocol's own words."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from apps.mailservers.limits import ConnectionCounters, ConnectionLimits, Gate
from apps.store import health
from mailhost import metrics
from mailhost.asyncdb import database_sync_to_async

log = logging.getLogger("mailhost.listeners")

FactoryMaker = Callable[[ssl.SSLContext | None, str], Callable[[], asyncio.Protocol]]


@dataclass(frozen=True)
class Words:
    """What a protocol says to a connection over the limits (then closed) and to
    a client silent after the greeting (empty: close without a word)."""

    busy: bytes
    silent: bytes


def _smtp_line(reply: str) -> bytes:
    return reply.encode() + b"\r\n"


@dataclass(frozen=True)
class ListenerSpec:
    """A listener, naming its protocol's code by import path: a process imports
    the protocols it serves only (``runmailservers --only smtp`` loads no IMAP,
    POP3 or ManageSieve code, several MiB it would keep)."""

    name: str
    protocol: str  # smtp, imap, pop3 or managesieve, as the metrics label it
    factory: str  # import path of the protocol's FactoryMaker
    # Import path of the module whose TOO_MANY_CONNECTIONS and NO_COMMAND_IN_TIME
    # are the protocol's Words: bytes, or SMTP reply strings (apps/smtp/replies.py).
    words_from: str
    implicit_tls: bool = False

    def make_factory(self, tls_context: ssl.SSLContext | None,
                     listener: str) -> Callable[[], asyncio.Protocol]:
        maker: FactoryMaker = import_string(self.factory)
        return maker(tls_context, listener)

    @property
    def words(self) -> Words:
        module = import_module(self.words_from)
        busy, silent = module.TOO_MANY_CONNECTIONS, module.NO_COMMAND_IN_TIME
        if isinstance(busy, str):
            return Words(_smtp_line(busy), _smtp_line(silent))
        return Words(busy, silent)


_SMTP = "apps.smtp.replies"
_IMAP = "apps.imap.session"
_POP3 = "apps.pop3.server"
_MANAGESIEVE = "apps.sieve.session"

# The protocol issues add their listeners here (IMAP, POP3, submission).
LISTENERS: dict[str, ListenerSpec] = {
    "smtp": ListenerSpec("smtp", "smtp", "apps.smtp.server.mx_protocol_factory", _SMTP),
    "pop3": ListenerSpec("pop3", "pop3", "apps.pop3.server.pop3_protocol_factory", _POP3),
    "pop3s": ListenerSpec("pop3s", "pop3", "apps.pop3.server.pop3_protocol_factory", _POP3,
                          implicit_tls=True),
    "imap": ListenerSpec("imap", "imap", "apps.imap.session.protocol_factory", _IMAP),
    "imaps": ListenerSpec("imaps", "imap", "apps.imap.session.protocol_factory", _IMAP,
                          implicit_tls=True),
    "submission": ListenerSpec("submission", "smtp",
                               "apps.smtp.submission.submission_protocol_factory", _SMTP),
    "smtps": ListenerSpec("smtps", "smtp", "apps.smtp.submission.smtps_protocol_factory",
                          _SMTP, implicit_tls=True),
    "managesieve": ListenerSpec("managesieve", "managesieve",
                                "apps.sieve.session.managesieve_protocol_factory",
                                _MANAGESIEVE),
}


@dataclass
class RunningListener:
    spec: ListenerSpec
    server: asyncio.Server
    sessions: set[Any] = field(default_factory=set)
    limits: ConnectionLimits = field(default_factory=lambda: ConnectionLimits(total=0, per_ip=0))

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]


def _gated(spec: ListenerSpec, session_factory: Callable[[], asyncio.Protocol],
           sessions: set[Any], limits: ConnectionLimits,
           gate_tls: ssl.SSLContext | None) -> Callable[[], Gate]:
    """Every connection meets the limits first (and the PROXY header before
    them, when configured); the listener knows its live sessions. ``gate_tls``:
    the implicit TLS that the gate starts, after the PROXY header."""
    greeting_timeout = settings.MAILHOST_GREETING_TIMEOUT
    proxy_from = settings.MAILHOST_PROXY_PROTOCOL_FROM

    counters = ConnectionCounters(
        metrics.CONNECTIONS.labels(spec.protocol, spec.name),
        metrics.CONNECTIONS_OPEN.labels(spec.protocol, spec.name))

    def make() -> Gate:
        return Gate(session_factory, limits=limits, sessions=sessions,
                    busy_reply=spec.words.busy, timeout_reply=spec.words.silent,
                    greeting_timeout=greeting_timeout, counters=counters,
                    proxy_from=proxy_from, tls_context=gate_tls)

    return make


async def start_listeners(
    ports: dict[str, int], *, host: str, tls_context: ssl.SSLContext | None,
    sockets: dict[str, socket.socket] | None = None,
    processes: dict[str, int] | None = None,
) -> list[RunningListener]:
    """Start the named listeners (``ports``: name -> port, 0 for a free one),
    on the listening ``sockets`` given or on sockets of their own.
    ``processes``: how many listener processes serve each name (1 if not
    given); each process takes its share of the connection limits."""
    loop = asyncio.get_running_loop()
    running = []
    for name, port in ports.items():
        spec = LISTENERS[name]
        sessions: set[Any] = set()
        limits = ConnectionLimits.share(
            total=settings.MAILHOST_MAX_CONNECTIONS,
            per_ip=settings.MAILHOST_MAX_CONNECTIONS_PER_IP,
            processes=(processes or {}).get(name, 1))
        ssl_context = tls_context if spec.implicit_tls else None
        gate_tls = None
        if settings.MAILHOST_PROXY_PROTOCOL_FROM:  # TLS begins after the PROXY header
            ssl_context, gate_tls = None, ssl_context
        factory = _gated(spec, spec.make_factory(tls_context, name), sessions, limits, gate_tls)
        # A client that never finishes the TLS handshake is silent too.
        handshake_timeout = (settings.MAILHOST_GREETING_TIMEOUT or None) if ssl_context else None
        if sockets and name in sockets:
            server = await loop.create_server(
                factory, sock=sockets[name], ssl=ssl_context,
                ssl_handshake_timeout=handshake_timeout)
        else:
            server = await loop.create_server(
                factory, host=host, port=port, ssl=ssl_context,
                ssl_handshake_timeout=handshake_timeout, reuse_address=True)
        listener = RunningListener(spec, server, sessions, limits)
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
