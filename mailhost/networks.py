"""Is an address in a list of networks (settings such as
MAILHOST_RATE_LIMIT_EXEMPT and MAILHOST_METRICS_ALLOWED_NETWORKS)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable


def address_in(ip: str, networks: Iterable[str]) -> bool:
    """Whether ``ip`` lies in one of ``networks`` (CIDR, host bits allowed);
    False for something that is not an IP address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in _parsed(tuple(networks)))


@functools.lru_cache(maxsize=32)
def _parsed(networks: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parsed once per list: the MX asks at every connection and message."""
    return [ipaddress.ip_network(net, strict=False) for net in networks]
