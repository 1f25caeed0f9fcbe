"""SASL PLAIN (RFC 4616) responses decoded, for every protocol that takes
them (POP3, ManageSieve): a pure function."""

from __future__ import annotations

import binascii

from mailhost.errors import Invalid


def decode_plain(response: str) -> tuple[str, str, str]:
    """(authorization id, authentication id, password) from a base64 response.

    RFC 5034 §4: "=" is an empty initial response; RFC 4616 §2:
    ``[authzid] NUL authcid NUL passwd`` in UTF-8, no NUL inside a field."""
    if response == "=":
        raw = b""
    else:
        try:
            raw = binascii.a2b_base64(response.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise Invalid("invalid base64 in SASL response") from None
    parts = raw.split(b"\0")
    if len(parts) != 3:
        raise Invalid("SASL PLAIN response is not authzid NUL authcid NUL password")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise Invalid("SASL PLAIN response is not valid UTF-8") from None
    if not authcid or not password:
        raise Invalid("SASL PLAIN response lacks a user name or password")
    return authzid, authcid, password
