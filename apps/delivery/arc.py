"""ARC sealing (RFC 8617) of the mail Mailhost forwards: aliases to outside
addresses, Sieve redirects and the webmail's forwarding (which is a redirect).

A forwarded message often fails SPF and, once changed on the way, DKIM at its
destination; the ARC set tells the receiver what our checks found on arrival
(ARC-Authentication-Results, copied from our Authentication-Results field),
signs the message as we send it (ARC-Message-Signature) and seals the chain
(ARC-Seal, whose cv= is the validation of the chain the message came with:
our Authentication-Results' "arc=" result, RFC 8617 §5.1.1). Signed with the
forwarding domain's RSA DKIM key (ARC defines rsa-sha256 only, §4.1.3 and
RFC 8463's Ed25519 is not allowed for ARC): no new key or DNS record needed.
"""

from __future__ import annotations

import logging

from django.conf import settings

from apps.directory.models import DkimKey
from apps.directory.services import signing_keys

log = logging.getLogger("mailhost.delivery")

# RFC 8617 §4.1.3: ARC takes DKIM's algorithms, of which RSA-SHA256 alone is
# to be used for signing (RFC 8301); dkimpy's ARC signer does only that.
_ARC_ALGORITHM = "rsa-sha256"


def seal(data: bytes, *, domain: str, keys: list[DkimKey] | None = None) -> bytes:
    """``data`` with an ARC set prepended, sealed for ``domain`` (a hosted
    domain, the forwarder's) from our own Authentication-Results field in it
    (authserv-id MAILHOST_HOSTNAME). ``data`` as it is when the domain has no
    RSA key, there is no such field, or the chain it came with was ended by
    someone (instance > 1 without a cv result: nothing to add to, §5.1.2)."""
    key = next((k for k in (signing_keys(domain) if keys is None else keys)
                if k.algorithm == _ARC_ALGORITHM), None)
    if key is None:
        return data
    import dkim  # dkimpy and PyNaCl: only where a forward is sealed

    try:
        arc_set = dkim.arc_sign(
            data, key.selector.encode("ascii"), domain.encode("ascii"),
            key.private_key.encode("ascii"), settings.MAILHOST_HOSTNAME.encode("ascii"))
    except dkim.DKIMException as error:
        # An ARC set we cannot make (a chain past 50 instances, a header we
        # cannot parse) leaves the message as unsealed forwarding always was.
        log.warning("ARC sealing for %s failed: %s", domain, error)
        return data
    return b"".join(arc_set) + data
