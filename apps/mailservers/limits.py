"""Connection limits and the greeting timeout, once for every listener.

Each listener counts its live connections in total and per client IP
(MAILHOST_MAX_CONNECTIONS, MAILHOST_MAX_CONNECTIONS_PER_IP; networks in
MAILHOST_RATE_LIMIT_EXEMPT are not counted). A connection over a limit gets the
protocol's own refusal line (SMTP 421, IMAP BYE, POP3 -ERR [SYS/TEMP]) and is
closed before the protocol's session is even built. An admitted connection
that sends nothing within MAILHOST_GREETING_TIMEOUT seconds of its greeting is
told so and closed; after its first bytes the protocol's own idle timeout
rules.

The counters live in this process: nothing to leak when a process is killed,
and no round trip per connection. When several listener processes accept on
one shared socket (MAILHOST_LISTENER_PROCESSES), each takes its share of the
limits: ``start_listeners(..., processes={name: N})`` divides them by N,
rounding up.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import prometheus_client

from apps.antispam.inbound import exempt_from_limits


class ConnectionLimits:
    """The live connections of one listener in this process."""

    def __init__(self, *, total: int, per_ip: int) -> None:
        self.total = total  # 0: no limit
        self.per_ip = per_ip
        self.live = 0
        self.by_ip: Counter[str] = Counter()

    @classmethod
    def share(cls, *, total: int, per_ip: int, processes: int) -> ConnectionLimits:
        """This process's share of limits set for all ``processes`` together."""
        processes = max(processes, 1)
        return cls(total=math.ceil(total / processes), per_ip=math.ceil(per_ip / processes))

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False when it is over a limit."""
        if exempt_from_limits(ip):
            return True
        if (self.total and self.live >= self.total) or (
                self.per_ip and self.by_ip[ip] >= self.per_ip):
            return False
        self.live += 1
        self.by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """An admitted connection from ``ip`` has ended."""
        if exempt_from_limits(ip):
            return
        self.live -= 1
        self.by_ip[ip] -= 1
        if not self.by_ip[ip]:
            del self.by_ip[ip]  # bounded by the live connections, not by every IP seen


def _peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ConnectionCounters(NamedTuple):
    """One listener's connection metrics (mailhost/metrics.py), resolved once."""

    accepted: prometheus_client.Counter
    open: prometheus_client.Gauge


class Gate(asyncio.Protocol):
    """The protocol a new connection first talks to: it admits or refuses the
    connection, then hands the transport to the real session and steps aside
    (the session receives the bytes directly, no wrapper per read)."""

    def __init__(
        self, make_session: Callable[[], asyncio.Protocol], *, limits: ConnectionLimits,
        sessions: set[Any], busy_reply: bytes, timeout_reply: bytes, greeting_timeout: float,
        counters: ConnectionCounters,
    ) -> None:
        self.make_session = make_session
        self.counters = counters
        self.limits = limits
        self.sessions = sessions
        self.busy_reply = busy_reply
        self.timeout_reply = timeout_reply
        self.greeting_timeout = greeting_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ip = _peer_ip(transport)
        self.counters.accepted.inc()
        if not self.limits.admit(ip):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self.busy_reply)
            transport.close()  # the reply is written before the close takes effect
            return
        session = self.make_session()
        transport.set_protocol(session)
        self._watch(session, transport, ip)
        self.sessions.add(session)
        self.counters.open.inc()
        session.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass  # a refused client talking on: it is being closed

    def _watch(self, session: Any, transport: asyncio.BaseTransport, ip: str) -> None:
        """Release the count when the session ends; close it if it says nothing."""
        timer: asyncio.TimerHandle | None = None
        if self.greeting_timeout > 0:
            timer = asyncio.get_running_loop().call_later(
                self.greeting_timeout, self._silent, transport)
            data_received = session.data_received

            def first_data(data: bytes) -> None:
                timer.cancel()
                del session.data_received  # back to the class's own method
                data_received(data)

            session.data_received = first_data
        connection_lost = session.connection_lost

        def lost(error: Exception | None) -> None:
            if timer is not None:
                timer.cancel()
            self.sessions.discard(session)
            self.limits.release(ip)
            self.counters.open.dec()
            connection_lost(error)

        session.connection_lost = lost

    def _silent(self, transport: asyncio.BaseTransport) -> None:
        if transport.is_closing():
            return
        if self.timeout_reply:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self.timeout_reply)
        transport.close()
