"""The transport map, as Postfix's ``transport(5)`` has one: per destination
domain, a next hop that replaces the MX lookup, and ``*`` for a smarthost.

``MAILHOST_TRANSPORTS="example.net=127.0.0.1:2626,*=smtp.relay.test:587;tls=require;auth=u:p"``

Each hop is ``host[:port]`` (``[v6]:port`` for IPv6) followed by optional
``;tls=may|require|none`` and ``;auth=user:password``. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from mailhost.errors import Invalid

TLS_POLICIES = ("may", "require", "none")


@dataclass(frozen=True)
class Route:
    host: str
    port: int
    tls: str = "may"
    username: str = ""
    password: str = ""


def _parse_hop(text: str, default_port: int) -> Route:
    hop, *options = [part.strip() for part in text.split(";")]
    if hop.startswith("["):
        host, _, rest = hop[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hop.partition(":")
    if not host:
        raise Invalid(f"transport {text!r}: no host")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise Invalid(f"transport {text!r}: bad port") from None
    if not 0 < port < 65536:
        raise Invalid(f"transport {text!r}: bad port")
    route = {"tls": "may", "username": "", "password": ""}
    for option in options:
        name, _, value = option.partition("=")
        if name == "tls" and value in TLS_POLICIES:
            route["tls"] = value
        elif name == "auth" and ":" in value:
            route["username"], _, route["password"] = value.partition(":")
        else:
            raise Invalid(f"transport {text!r}: unknown option {option!r}")
    return Route(host.lower(), port, **route)


def parse_transports(text: str, *, default_port: int = 25) -> dict[str, Route]:
    """``domain=hop,…`` -> {domain: Route}; raise Invalid on a malformed entry."""
    routes: dict[str, Route] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        domain, sep, hop = item.partition("=")
        if not sep or not domain.strip():
            raise Invalid(f"transport entry {item!r} is not domain=host:port")
        routes[domain.strip().lower().rstrip(".")] = _parse_hop(hop, default_port)
    return routes


def route_for(routes: dict[str, Route], domain: str) -> Route | None:
    """The exact domain's hop, else the smarthost ``*``, else None (use MX)."""
    return routes.get(domain.lower()) or routes.get("*")
