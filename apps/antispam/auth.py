"""Sender authentication: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489).

SPF and DKIM are done by pyspf and dkimpy, which query DNS through our
resolver seam (mailhost.dns, through apps.antispam.dns). DMARC record parsing and alignment are
pure functions; ``evaluate_dmarc`` adds the record lookup.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

import spf
from publicsuffixlist import PublicSuffixList

from apps.antispam import dns
from mailhost.dns import DnsTemporaryError

log = logging.getLogger(__name__)

# pyspf's documented extension point: all its lookups go through this function.
spf.DNSLookup = dns.pyspf_lookup


# --- SPF ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass fail softfail neutral none temperror permerror
    explanation: str
    domain: str  # the identity checked: MAIL FROM domain, or HELO for a null sender


def check_spf(ip: str, mail_from: str, helo: str) -> SpfResult:
    """RFC 7208 §2.4: a null reverse-path is checked as postmaster@HELO."""
    sender = mail_from or f"postmaster@{helo}"
    domain = sender.rpartition("@")[2].lower()
    try:
        result, explanation = spf.check2(i=ip, s=sender, h=helo or "unknown", querytime=20)
    except Exception as error:  # pyspf raises on inputs it cannot parse
        log.warning("spf check failed ip=%s sender=%s: %s", ip, sender, error)
        return SpfResult("permerror", str(error)[:500], domain)
    return SpfResult(result, (explanation or "")[:500], domain)


# --- DKIM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass fail temperror permerror
    domain: str
    selector: str


_DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def verify_dkim(data: bytes) -> list[DkimResult]:
    """One result per DKIM-Signature header, in header order."""
    if not _DKIM_FIELD.search(data.split(b"\r\n\r\n", 1)[0]):
        return []  # unsigned: dkimpy's parse of the whole message would find nothing
    # dkimpy (with PyNaCl) is imported by the workers that verify, not by the
    # listeners, which load this module for SPF at MAIL FROM.
    import dkim
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        verifier = dkim.DKIM(data, logger=logging.getLogger("mailhost.antispam.dkim"))
    except dkim.MessageFormatError:
        return []
    signatures = [value for name, value in verifier.headers
                  if name.lower() == b"dkim-signature"]
    results = []
    for index, value in enumerate(signatures):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            results.append(DkimResult("permerror", "", ""))
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        found_key: list[bool] = []

        def dnsfunc(name: bytes | str, timeout: int = 5,
                    found: list[bool] = found_key) -> bytes | None:
            record = dns.dkim_dnsfunc(name, timeout)
            found.append(record is not None)
            return record

        try:
            good = verifier.verify(index, dnsfunc=dnsfunc)
        except (DnsTemporaryError, dkim.DnsTimeoutError):
            results.append(DkimResult("temperror", domain, selector))
            continue
        except dkim.ValidationError as error:  # e.g. body hash mismatch
            log.info("dkim fail d=%s: %s", domain, error)
            results.append(DkimResult("fail", domain, selector))
            continue
        except Exception as error:  # malformed signature or key: RFC 6376 §6.1 PERMFAIL
            log.info("dkim permerror d=%s: %s", domain, error)
            results.append(DkimResult("permerror", domain, selector))
            continue
        if not good and found_key == [False]:
            # RFC 6376 §6.1.2: no key record is a PERMFAIL, not a bad signature.
            results.append(DkimResult("permerror", domain, selector))
            continue
        results.append(DkimResult("pass" if good else "fail", domain, selector))
    return results


_ARC_FIELD = re.compile(rb"^arc-[a-z-]+[ \t]*:", re.IGNORECASE | re.MULTILINE)


def verify_arc(data: bytes) -> str:
    """RFC 8617 §5.2: the chain validation status (pass, fail, none), or
    temperror. Informational: recorded, not used to override DMARC."""
    if not _ARC_FIELD.search(data.split(b"\r\n\r\n", 1)[0]):
        return "none"  # no ARC field at all: nothing for dkimpy to parse
    import dkim

    try:
        status, _, _ = dkim.arc_verify(
            data, logger=logging.getLogger("mailhost.antispam.arc"), dnsfunc=dns.dkim_dnsfunc)
    except DnsTemporaryError:
        return "temperror"
    except Exception as error:  # a chain dkimpy cannot parse is a broken chain
        log.info("arc chain unreadable: %s", error)
        return "fail"
    return status.decode() if isinstance(status, bytes) else str(status)


# --- DMARC --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: one label below the public suffix."""
    domain = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict needs the same name, relaxed the same organisation."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


@dataclass(frozen=True)
class DmarcRecord:
    policy: str
    subdomain_policy: str | None
    percent: int
    adkim: str
    aspf: str


_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc_record(text: str) -> DmarcRecord | None:
    """RFC 7489 §6.3/§6.4; None when the record is not a valid DMARC record."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            if part.strip():
                return None
            continue
        tags.setdefault(name.strip().lower(), value.strip())
    if not text.lstrip().startswith("v") or tags.get("v") != "DMARC1":
        return None  # §6.4: v must be first and exactly DMARC1
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if "rua" in tags:
            policy = "none"  # §6.6.3 step 6: invalid p with rua is treated as none
        else:
            return None
    subdomain_policy = tags.get("sp", "").lower()
    try:
        percent = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        percent = 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain_policy if subdomain_policy in _POLICIES else None,
        percent=percent,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
    )


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass fail none temperror permerror
    from_domain: str
    policy: str = "none"  # what the receiver applies: none quarantine reject
    requested: str = ""  # the policy the record asked for (p= or sp=)


def _find_record(from_domain: str) -> tuple[DmarcRecord | None, bool]:
    """§6.6.3: the From domain's record, else the organisational domain's.
    Returns the record and whether it came from the organisational domain."""
    candidates = [from_domain]
    org = organizational_domain(from_domain)
    if org != from_domain:
        candidates.append(org)
    for index, domain in enumerate(candidates):
        records = [r for r in dns.txt_records(f"_dmarc.{domain}")
                   if r.lower().startswith("v=dmarc1")]
        parsed = [p for p in map(parse_dmarc_record, records) if p is not None]
        if len(parsed) == 1:  # §6.6.3 step 4: more than one means none
            return parsed[0], index > 0
        if records:
            return None, False
    return None, False


def evaluate_dmarc(
    from_domain: str, spf_result: SpfResult, dkim_results: list[DkimResult], *,
    sample: float,
) -> DmarcResult:
    """RFC 7489 §6.6. ``sample`` in [0, 1) decides the pct= sampling (§6.6.4)."""
    from_domain = from_domain.lower().rstrip(".")
    if not from_domain:
        return DmarcResult("none", "")
    try:
        record, from_org = _find_record(from_domain)
    except DnsTemporaryError:
        return DmarcResult("temperror", from_domain)
    if record is None:
        return DmarcResult("none", from_domain)
    requested = record.policy
    if from_org and record.subdomain_policy:
        requested = record.subdomain_policy  # §6.3 sp: policy for subdomains
    spf_aligned = spf_result.result == "pass" and aligned(
        spf_result.domain, from_domain, record.aspf)
    dkim_aligned = any(r.result == "pass" and aligned(r.domain, from_domain, record.adkim)
                       for r in dkim_results)
    if spf_aligned or dkim_aligned:
        return DmarcResult("pass", from_domain, "none", requested)
    applied = requested
    if sample * 100 >= record.percent:
        # §6.6.4: outside the sample, apply the next less strict policy.
        applied = {"reject": "quarantine", "quarantine": "none"}.get(requested, "none")
    return DmarcResult("fail", from_domain, applied, requested)
