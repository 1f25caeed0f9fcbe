"""MTA-STS (RFC 8461) for outbound delivery: other domains' policies
discovered through their ``_mta-sts`` TXT record, fetched over HTTPS from
``mta-sts.<domain>``, cached as §5 says, and applied to the MX hosts we try.

The parsers (``parse_policy``, ``parse_sts_record``) and ``mx_matches`` are
pure; ``lookup_policy`` does the lookups (through mailhost.dns, the one resolver
seam), the fetch and the caching."""

from __future__ import annotations

import asyncio
import http.client
import logging
import re
import socket
import ssl
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from apps.delivery.mx import host_addresses
from mailhost.dns import DnsTemporaryError, query

log = logging.getLogger(__name__)

MODES = ("enforce", "testing", "none")
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31_557_600
# RFC 8461 §3.3: senders may limit the policy's size; 64 KiB is its example.
MAX_POLICY_BYTES = 64 * 1024
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
# RFC 8461 §3.2: an mx value is a domain name, or "*." and one (§4.1).
_MX_PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})+\.?$")
# RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT).
_STS_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_MAX_AGE = re.compile(r"^[0-9]{1,10}$")


class PolicyError(ValueError):
    """A policy or TXT record that does not parse, or a policy that could not
    be fetched: as if there were none. ``result_type`` names the failure in
    a TLS report (RFC 8460 §4.3.2.2)."""

    def __init__(self, message: str, result_type: str = "sts-policy-invalid") -> None:
        super().__init__(message)
        self.result_type = result_type


@dataclass(frozen=True)
class Policy:
    mode: str
    max_age: int
    mx: tuple[str, ...]

    def allows(self, host: str) -> bool:
        """RFC 8461 §4.1: ``host`` matches one of the policy's mx patterns."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: an exact name, or "*.example.com" matching exactly one
    more label ("mail.example.com", not "example.com" nor "a.b.example.com");
    case does not matter, nor a final dot."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def parse_policy(data: bytes) -> Policy:
    """RFC 8461 §3.2: "key: value" lines (CRLF or LF); version STSv1, mode,
    max_age and (unless mode is none) one or more mx. Unknown keys are
    ignored; of a key other than mx given twice, the first counts."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the policy is not UTF-8 text") from None
    fields: dict[str, str] = {}
    patterns: list[str] = []
    for raw_line in text.split("\n"):
        line = raw_line.removesuffix("\r")
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise PolicyError(f"{line[:80]!r} is not a 'key: value' line")
        value = value.strip(" \t")
        if name == "mx":
            if not _MX_PATTERN.match(value):
                raise PolicyError(f"mx {value[:80]!r} is not a host name or *.domain pattern")
            patterns.append(value.lower().rstrip("."))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"mode {mode[:20]!r} is not enforce, testing or none")
    max_age = fields.get("max_age", "")
    if not _MAX_AGE.match(max_age):
        raise PolicyError(f"max_age {max_age[:20]!r} is not a number of seconds")
    if mode != "none" and not patterns:
        raise PolicyError("no mx in a policy that is not mode none")
    return Policy(mode, min(int(max_age), MAX_AGE_LIMIT), tuple(patterns))


def parse_sts_record(texts: list[str]) -> str:
    """The policy id of the ``_mta-sts`` TXT records (RFC 8461 §3.1): records
    not beginning with "v=STSv1" are discarded; there must be exactly one left,
    and it must have an id. PolicyError otherwise (no policy then)."""
    records = [t for t in texts if t.startswith("v=STSv1")]
    if len(records) != 1:
        raise PolicyError(f"{len(records)} v=STSv1 records")
    version, *fields = [f.strip(" \t") for f in records[0].split(";")]
    if version != "v=STSv1":
        raise PolicyError("the record does not start with v=STSv1;")
    ids = [value for name, _, value in (f.partition("=") for f in fields) if name == "id"]
    if not ids or not _STS_ID.match(ids[0]):
        raise PolicyError("no valid id= in the record")
    return ids[0]


# --- discovery, fetch and cache (I/O) ------------------------------------------


def tls_context() -> ssl.SSLContext:
    """RFC 8461 §4.2 (and §3.3 for the policy host): certificates checked
    against trusted roots and the host name, TLS 1.2 at least.
    MAILHOST_MTA_STS_CA_FILE replaces the system's roots (tests)."""
    context = ssl.create_default_context(cafile=settings.MAILHOST_MTA_STS_CA_FILE or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (its certificate, SNI and Host header) at an
    address found through our resolver rather than the system's."""

    def __init__(self, host: str, address: str, port: int, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=tls_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            sock, server_hostname=self.host)


def fetch_policy(domain: str) -> Policy:
    """RFC 8461 §3.3: GET https://mta-sts.<domain>/.well-known/mta-sts.txt, the
    certificate valid for that name; 200 and text/plain only, no redirects
    followed, no more than MAX_POLICY_BYTES. PolicyError on any failure."""
    host = f"mta-sts.{domain}"
    try:
        addresses = asyncio.run(host_addresses(host))
    except DnsTemporaryError as error:
        raise PolicyError(f"{host}: {error}", "sts-policy-fetch-error") from None
    failure, result_type = f"{host} has no address", "sts-policy-fetch-error"
    for address in addresses:
        connection = _HTTPSConnection(host, address, settings.MAILHOST_MTA_STS_FETCH_PORT,
                                      timeout=settings.MAILHOST_DELIVERY_TIMEOUT)
        try:
            connection.request("GET", "/.well-known/mta-sts.txt",
                               headers={"User-Agent": "Mailhost MTA-STS"})
            response = connection.getresponse()
            body = response.read(MAX_POLICY_BYTES + 1)
            break
        except (OSError, http.client.HTTPException) as error:  # a certificate error too
            failure = f"https://{host}/ at {address}: {error}"
            result_type = ("sts-webpki-invalid" if isinstance(error, ssl.SSLCertVerificationError)
                           else "sts-policy-fetch-error")
        finally:
            connection.close()
    else:
        raise PolicyError(failure, result_type)
    if response.status != 200:
        raise PolicyError(f"https://{host}/.well-known/mta-sts.txt answered {response.status}",
                          "sts-policy-fetch-error")
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "text/plain":
        raise PolicyError(f"the policy of {domain} is {content_type or 'untyped'}, "
                          "not text/plain")
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy of {domain} is larger than {MAX_POLICY_BYTES} bytes")
    return parse_policy(body)


def _cache_key(domain: str) -> str:
    return f"mta-sts:policy:{domain}"


@dataclass(frozen=True)
class PolicyLookup:
    policy: Policy | None
    # RFC 8460 §4.3.2.2: why a published policy (a new id, none cached) could
    # not be had, for the TLS report.
    failure: str = ""


def lookup_policy(domain: str) -> PolicyLookup:
    """The MTA-STS policy that applies to mail for ``domain`` now, if any.

    RFC 8461 §5 and §3.3: a cached policy is used while its max_age lasts and
    the TXT record's id is unchanged (or the TXT record cannot be found); a new
    id means fetching again, and when that fails the cached policy still holds.
    Without a cached one, a failed discovery or fetch means no policy."""
    domain = domain.lower().rstrip(".")
    # {"id": the TXT record's id, "policy": Policy}, kept for the policy's max_age
    cached = cache.get(_cache_key(domain))
    try:
        policy_id = parse_sts_record(query(f"_mta-sts.{domain}", "TXT"))
    except (PolicyError, DnsTemporaryError) as error:
        # RFC 8461 §5.1: no record now; a cached policy stays until it expires.
        if cached is None:
            log.debug("no MTA-STS policy for %s: %s", domain, error)
        return PolicyLookup(cached["policy"] if cached else None)
    if cached is not None and cached["id"] == policy_id:
        return PolicyLookup(cached["policy"])
    try:
        policy = fetch_policy(domain)
    except PolicyError as error:
        log.warning("MTA-STS policy of %s not fetched (id %s): %s", domain, policy_id, error)
        if cached:
            return PolicyLookup(cached["policy"])
        return PolicyLookup(None, error.result_type)
    if policy.max_age > 0:
        cache.set(_cache_key(domain), {"id": policy_id, "policy": policy},
                  timeout=policy.max_age)
    log.info("MTA-STS policy of %s: mode %s, mx %s, max_age %s", domain, policy.mode,
             " ".join(policy.mx), policy.max_age)
    return PolicyLookup(policy)
