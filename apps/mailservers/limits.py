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

Behind a load balancer (MAILHOST_PROXY_PROTOCOL_FROM: its networks) the gate
first reads the PROXY protocol header (apps/mailservers/proxy_protocol.py) of a
connection from there, and counts, logs and hands to the session the client's
address from it; a connection from there without a valid header, or from
elsewhere with one, is closed. Implicit TLS then starts after the header, so
the listeners' servers are made without TLS and the gate layers it on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from asyncio.sslproto import SSLProtocol
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import prometheus_client

from apps.antispam.inbound import exempt_from_limits
from apps.mailservers import proxy_protocol
from mailhost.networks import address_in

log = logging.getLogger("mailhost.listeners")


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


class ProxiedTransport(asyncio.Transport):
    """A connection through a load balancer as its session sees it: the real
    transport, with the peer and local addresses that the PROXY header gave."""

    _start_tls_compatible = True  # STARTTLS (loop.start_tls) layers TLS on it

    def __init__(self, transport: asyncio.Transport, header: proxy_protocol.ProxyHeader) -> None:
        super().__init__(extra={"peername": header.source, "sockname": header.destination})
        self._transport = transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra:
            return self._extra[name]
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand bytes already read off the socket to the protocol that reads on."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        while data:
            buffer = protocol.get_buffer(len(data))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            protocol.buffer_updated(size)
            data = data[size:]
    elif data:
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)


class Gate(asyncio.Protocol):
    """The protocol a new connection first talks to: it reads the PROXY header
    (when configured), starts implicit TLS (when the gate does it), admits or
    refuses the connection, then hands the transport to the real session and
    steps aside (the session receives the bytes directly, no wrapper per read)."""

    def __init__(
        self, make_session: Callable[[], asyncio.Protocol], *, limits: ConnectionLimits,
        sessions: set[Any], busy_reply: bytes, timeout_reply: bytes, greeting_timeout: float,
        counters: ConnectionCounters, proxy_from: list[str] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.make_session = make_session
        self.counters = counters
        self.limits = limits
        self.sessions = sessions
        self.busy_reply = busy_reply
        self.timeout_reply = timeout_reply
        self.greeting_timeout = greeting_timeout
        self.proxy_from = proxy_from or []
        self.tls_context = tls_context  # implicit TLS, started here after the header
        self._header = b""  # a PROXY header so far
        self._raw: asyncio.Transport | None = None  # while that header is read
        self._header_timer: asyncio.TimerHandle | None = None
        self._tls_ip: str | None = None  # the client's, while its handshake runs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._tls_ip is not None:  # the handshake that _begin started is done
            self._admit(transport, self._tls_ip, refuse_header=False)
            return
        ip = _peer_ip(transport)
        if self.proxy_from and address_in(ip, self.proxy_from):
            self._raw = transport
            if self.greeting_timeout > 0:
                self._header_timer = asyncio.get_running_loop().call_later(
                    self.greeting_timeout, transport.close)
            return
        # From elsewhere: a PROXY header is refused (it would claim any address).
        self._begin(transport, ip, b"", refuse_header=bool(self.proxy_from))

    def data_received(self, data: bytes) -> None:
        if self._raw is None:
            return  # a refused client talking on: it is being closed
        self._header += data
        try:
            header = proxy_protocol.parse(self._header)
        except proxy_protocol.ProxyHeaderError as error:
            log.warning("connection from %s refused: %s", _peer_ip(self._raw), error)
            self._raw.close()
            self._raw = None
            return
        if header is None:
            return
        raw, rest = self._raw, self._header[header.length:]
        self._raw, self._header = None, b""
        if self._header_timer is not None:
            self._header_timer.cancel()
        if header.source is None:  # the balancer's own connection
            self._begin(raw, _peer_ip(raw), rest, refuse_header=False)
        else:
            self._begin(ProxiedTransport(raw, header), header.source[0], rest,
                        refuse_header=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()

    def _begin(self, transport: asyncio.Transport, ip: str, rest: bytes, *,
               refuse_header: bool) -> None:
        """After the header, if any: implicit TLS if the gate starts it, then admission."""
        if self.tls_context is None:
            self._admit(transport, ip, rest=rest, refuse_header=refuse_header)
            return
        # As loop.create_server(ssl=...) would have done, but after the header,
        # with the bytes read past it; the handshake calls connection_made again.
        self._tls_ip = ip
        tls = SSLProtocol(asyncio.get_running_loop(), self, self.tls_context, None,
                          server_side=True, call_connection_made=True,
                          ssl_handshake_timeout=self.greeting_timeout or None)
        transport.set_protocol(tls)
        tls.connection_made(transport)
        _feed(tls, rest)

    def _admit(self, transport: asyncio.Transport, ip: str, *, rest: bytes = b"",
               refuse_header: bool) -> None:
        self.counters.accepted.inc()
        if not self.limits.admit(ip):
            transport.write(self.busy_reply)
            transport.close()  # the reply is written before the close takes effect
            return
        session = self.make_session()
        transport.set_protocol(session)
        self._watch(session, transport, ip, refuse_header=refuse_header)
        self.sessions.add(session)
        self.counters.open.inc()
        session.connection_made(transport)
        _feed(session, rest)

    def _watch(self, session: Any, transport: asyncio.BaseTransport, ip: str, *,
               refuse_header: bool) -> None:
        """Release the count when the session ends; close it if it says nothing,
        or if its first bytes are a PROXY header that it may not send."""
        timer: asyncio.TimerHandle | None = None
        if self.greeting_timeout > 0:
            timer = asyncio.get_running_loop().call_later(
                self.greeting_timeout, self._silent, transport)
        if timer is not None or refuse_header:
            data_received = session.data_received

            def first_data(data: bytes) -> None:
                if timer is not None:
                    timer.cancel()
                del session.data_received  # back to the class's own method
                if refuse_header and proxy_protocol.looks_like_header(data):
                    log.warning("connection from %s refused: a PROXY header from outside "
                                "MAILHOST_PROXY_PROTOCOL_FROM", ip)
                    transport.close()
                    return
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
