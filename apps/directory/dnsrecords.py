"""The DNS records a hosted domain needs, in zone-file syntax (RFC 1035 §5.1).

A pure function: the caller passes the domain, the mail host name and the
DKIM public keys; nothing here reads the database or the network."""

from __future__ import annotations

from collections.abc import Iterable

TTL = 3600
# RFC 1035 §3.3.14: one character-string holds at most 255 octets; a longer
# TXT value is several strings in one record (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
_TXT_CHUNK = 255


def _txt(value: str) -> str:
    return " ".join(f'"{value[i:i + _TXT_CHUNK]}"' for i in range(0, len(value), _TXT_CHUNK))


def dns_records(
    domain: str, *, mail_host: str, dkim_keys: Iterable[tuple[str, str, str]],
) -> list[str]:
    """MX, SPF, DKIM (one per ``(selector, algorithm, base64 public key)``) and
    DMARC records, one per line, names fully qualified."""
    origin = f"{domain.rstrip('.')}."
    host = f"{mail_host.rstrip('.')}."
    records = [
        f"{origin}\t{TTL}\tIN\tMX\t10 {host}",
        # RFC 7208: the hosts named by MX send the domain's mail; nobody else does.
        f"{origin}\t{TTL}\tIN\tTXT\t{_txt('v=spf1 mx -all')}",
    ]
    for selector, algorithm, public_key in dkim_keys:
        # RFC 6376 §3.6.1: the key record at <selector>._domainkey.<domain>;
        # k= is the key type, "rsa" or (RFC 8463 §4) "ed25519".
        key_type = algorithm.partition("-")[0]
        records.append(f"{selector}._domainkey.{origin}\t{TTL}\tIN\tTXT\t"
                       f"{_txt(f'v=DKIM1; k={key_type}; p={public_key}')}")
    # RFC 7489 §6.3: start at quarantine, relaxed alignment as signed and sent here.
    records.append(f"_dmarc.{origin}\t{TTL}\tIN\tTXT\t"
                   f"{_txt('v=DMARC1; p=quarantine; adkim=r; aspf=r')}")
    return records
