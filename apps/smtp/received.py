"""The Received trace header (RFC 5321 §4.4)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    # RFC 3848 §1: ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both).
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *, helo: str | None, peer_ip: str, by_host: str, protocol: str, queue_id: str,
    recipients: list[str], when: datetime,
) -> bytes:
    helo_text = helo or "unknown"
    # "for" only with one recipient: listing several would disclose Bcc recipients.
    for_clause = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    line = (
        f"Received: from {helo_text} ([{peer_ip}])\r\n"
        f"\tby {by_host} (Mailhost) with {protocol} id {queue_id}{for_clause};\r\n"
        f"\t{format_datetime(when)}\r\n"
    )
    return line.encode("utf-8", errors="surrogateescape")
