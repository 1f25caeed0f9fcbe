"""The PROXY protocol header (versions 1 and 2) that a TCP load balancer such as
HAProxy sends before the client's first byte, so that a listener behind it
knows the client's address. Pure functions over bytes.

The specification is HAProxy's "The PROXY protocol, versions 1 & 2"
(haproxy.org/download/2.9/doc/proxy-protocol.txt); sections cited below are its.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

# §2.1: "PROXY" + " TCP4|TCP6|UNKNOWN" + addresses, at most 107 bytes with CRLF.
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107
# §2.2: the twelve-byte signature, then version/command, family/protocol, length.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16
_V2_ADDRESS_LENGTHS = {0x1: 12, 0x2: 36}  # AF_INET, AF_INET6: two addresses, two ports


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header: the connection is refused."""


@dataclass(frozen=True)
class ProxyHeader:
    """What the header says. ``source``/``destination`` are None when the
    connection's own addresses stand: a v1 ``UNKNOWN``, a v2 ``LOCAL`` (the
    balancer's own health check) or an address family other than TCP over IPv4/6."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the header; what follows is the client's


def looks_like_header(data: bytes) -> bool:
    """Whether a connection's first bytes begin a PROXY header."""
    return data.startswith(V1_PREFIX) or data.startswith(V2_SIGNATURE)


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while it is incomplete.
    Raises ProxyHeaderError when the bytes cannot become a valid header."""
    if len(data) < len(V2_SIGNATURE) and (
            V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data[:len(V1_PREFIX)])):
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data:
            raise ProxyHeaderError("PROXY v1 line without CRLF within 107 bytes")
        return None
    fields = data[:end].split(b" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":  # §2.1: the rest may be ignored
        return ProxyHeader(None, None, length)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 line is not PROXY TCP4|TCP6 src dst sport dport")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _address(fields[2], version), _port(fields[4])
    destination = _address(fields[3], version), _port(fields[5])
    return ProxyHeader(source, destination, length)


def _address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"PROXY v1 address {text[:40]!r} is not an address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1 address {address} is not IPv{version}")
    return str(address)


def _port(text: bytes) -> int:
    # §2.1: a port is a decimal number without leading zero, 0 to 65535.
    if not text.isdigit() or (len(text) > 1 and text.startswith(b"0")) or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 port {text[:10]!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED_LENGTH:
        return None
    version_command, family_protocol, address_length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError("PROXY v2 header of another version")
    command = version_command & 0x0F
    if command not in (0x0, 0x1):  # §2.2: LOCAL, PROXY; others must be refused
        raise ProxyHeaderError(f"PROXY v2 command {command} is unknown")
    length = V2_FIXED_LENGTH + address_length
    if len(data) < length:
        return None
    family, transport = family_protocol >> 4, family_protocol & 0x0F
    needed = _V2_ADDRESS_LENGTHS.get(family)
    # LOCAL: the balancer speaking for itself; UNSPEC, UNIX or UDP: addresses we
    # cannot use as a TCP client's (§2.2 "the receiver ... must use the real
    # connection endpoints").
    if command == 0x0 or needed is None or transport != 0x1:
        return ProxyHeader(None, None, length)
    if address_length < needed:
        raise ProxyHeaderError("PROXY v2 address block shorter than its family needs")
    size = 4 if family == 0x1 else 16
    addresses = data[V2_FIXED_LENGTH:V2_FIXED_LENGTH + 2 * size]
    source_port, destination_port = struct.unpack_from("!HH", data, V2_FIXED_LENGTH + 2 * size)
    source = str(ipaddress.ip_address(addresses[:size])), source_port
    destination = str(ipaddress.ip_address(addresses[size:])), destination_port
    # What follows the addresses (TLVs, §2.2.1-) is ours to skip.
    return ProxyHeader(source, destination, length)
