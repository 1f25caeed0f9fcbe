"""Address normalisation: pure functions, no I/O.

Domains are stored as lower-case IDNA A-labels; local parts are compared
case-insensitively (RFC 5321 §2.4 lets a host treat them so, and every
mailbox provider does) and may be UTF-8 (RFC 6531).
"""

from __future__ import annotations

import re

from mailhost.errors import Invalid

# RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain.
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Atoms of RFC 5322 §3.2.3 plus UTF-8 (RFC 6532 §3.2); quoted local parts are refused:
# nobody provisions one and they are a favourite of address-confusion tricks.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
                    r"(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*$")


def normalize_domain(name: str) -> str:
    """Return the lower-case A-label form of a domain name, or raise Invalid."""
    name = name.strip().rstrip(".")
    if not name:
        raise Invalid("empty domain name")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        raise Invalid(f"{name!r} is not a valid domain name") from None
    if len(ascii_name) > MAX_DOMAIN_OCTETS or "." not in ascii_name:
        raise Invalid(f"{name!r} is not a fully qualified domain name")
    if not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise Invalid(f"{name!r} is not a valid domain name")
    return ascii_name


def normalize_local(local: str) -> str:
    if not local or not _LOCAL.match(local):
        raise Invalid(f"{local!r} is not a valid local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise Invalid("local part longer than 64 octets")
    return local.lower()


def split_address(address: str) -> tuple[str, str]:
    """Split and normalise ``local@domain``; raise Invalid if it is not one."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep:
        raise Invalid(f"{address!r} is not an e-mail address")
    return normalize_local(local), normalize_domain(domain)


def normalize_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}"


def strip_subaddress(local: str, delimiter: str) -> str | None:
    """``user+tag`` -> ``user``; None when there is no tag to strip."""
    if not delimiter or delimiter not in local:
        return None
    base = local.split(delimiter, 1)[0]
    return base or None
