"""Delivery status notifications (RFC 3464) and the DSN parameters of SMTP
(RFC 3461): pure functions over values and bytes, no I/O, no clock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from mailhost.errors import Invalid

# RFC 3461 §4: xtext is printable ASCII except "+" and "=", with "+XX" escapes.
_XTEXT_ESCAPE = re.compile(r"\+([0-9A-F]{2})")
# What is not xtext: another character, or a "+" without two hex digits. A
# search for it keeps no per-character state, where matching the whole value
# against a repeated alternation took over 100 bytes of memory per character
# (found by bench/fuzz.py: 116 MiB for a 1 MB value).
_XTEXT_INVALID = re.compile(r"[^!-*,-<>-~+]|\+(?![0-9A-F]{2})")
NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")


def xtext_decode(text: str) -> str:
    if _XTEXT_INVALID.search(text):
        raise Invalid(f"{text[:60]!r} is not xtext (RFC 3461 §4)")
    return _XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def xtext_encode(text: str) -> str:
    return "".join(
        f"+{ord(c):02X}" if c in "+=" or not "!" <= c <= "~" else c for c in text)


def parse_notify(value: str) -> str:
    """RFC 3461 §4.1: NEVER alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    items = [item.upper() for item in value.split(",")]
    if items == ["NEVER"]:
        return "NEVER"
    if not items or any(item not in NOTIFY_VALUES for item in items) or len(set(items)) < len(
            items):
        raise Invalid("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return ",".join(items)


def parse_orcpt(value: str) -> str:
    """RFC 3461 §4.2: ``addr-type ";" xtext`` -> ``addr-type;decoded``."""
    addr_type, sep, address = value.partition(";")
    if not sep or not addr_type or not address:
        raise Invalid("ORCPT must be addr-type;address")
    return f"{addr_type.lower()};{xtext_decode(address)}"


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's per-recipient fields (RFC 3464 §2.3)."""

    recipient: str
    action: str  # failed | delayed | delivered | relayed (§2.3.3)
    status: str  # RFC 3463 code, e.g. 5.1.1
    orcpt: str = ""
    remote_mta: str = ""
    diagnostic: str = ""  # the remote server's reply, e.g. "550 5.1.1 No such user"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
_EXPLANATIONS = {
    "failed": "could not be delivered to one or more recipients. It has been given up on.",
    "delayed": "has not yet been delivered to one or more recipients. Delivery will be "
               "retried; you do not need to send it again.",
    "delivered": "was delivered to the recipients below.",
    "relayed": "was handed on to the recipients' servers, which do not report further.",
}


def _field(name: str, value: str) -> str:
    # RFC 3464 §2.1: the fields are US-ASCII; strip line breaks a reply might carry.
    clean = " ".join(value.split()).encode("ascii", "replace").decode("ascii")
    return f"{name}: {clean}\r\n"


def headers_of(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_dsn(
    *, reporting_mta: str, recipient: str, original: bytes, reports: Sequence[RecipientReport],
    ret: str, envid: str, arrival: datetime, now: datetime,
) -> bytes:
    """A multipart/report (RFC 6522) of report-type delivery-status (RFC 3464),
    to be sent from the null sender to ``recipient``. The original message is
    returned whole for failures unless RET=HDRS (RFC 3461 §4.3); delay and
    success reports carry its headers only."""
    action = reports[0].action
    token = hashlib.sha256(
        original[:4096] + now.isoformat().encode() + recipient.encode()).hexdigest()[:24]
    boundary = f"=_dsn_{token}"
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: {_SUBJECTS[action]}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: <{token}.dsn@{reporting_mta}>\r\n"
        # RFC 3834 §5: an automatic answer, so that nobody auto-replies to it.
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
    )
    human = [f"This is the mail system at {reporting_mta}.", "",
             f"Your message {_EXPLANATIONS[action]}", ""]
    for report in reports:
        human.append(f"<{report.recipient}>: {report.diagnostic or report.status}")
    text_part = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + "\r\n".join(human) + "\r\n\r\n"
    )
    # RFC 3464 §2.2: per-message fields, then §2.3: a block per recipient.
    status = _field("Reporting-MTA", f"dns; {reporting_mta}")
    if envid:
        status += _field("Original-Envelope-Id", envid)
    status += _field("Arrival-Date", format_datetime(arrival))
    for report in reports:
        status += "\r\n"
        if report.orcpt:
            status += _field("Original-Recipient", report.orcpt)
        status += _field("Final-Recipient", f"rfc822; {report.recipient}")
        status += _field("Action", report.action)
        status += _field("Status", report.status)
        if report.remote_mta:
            status += _field("Remote-MTA", f"dns; {report.remote_mta}")
        if report.diagnostic:
            status += _field("Diagnostic-Code", f"smtp; {report.diagnostic}")
        if report.last_attempt:
            status += _field("Last-Attempt-Date", format_datetime(report.last_attempt))
        if report.will_retry_until:
            status += _field("Will-Retry-Until", format_datetime(report.will_retry_until))
    status_part = (f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
                   f"{status}\r\n")
    if action == "failed" and ret != "HDRS":
        returned = (f"--{boundary}\r\nContent-Type: message/rfc822\r\n"
                    "Content-Disposition: attachment\r\n\r\n").encode() + original
    else:
        returned = (f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n"
                    "Content-Disposition: attachment\r\n\r\n").encode() + headers_of(original)
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return (head + text_part + status_part).encode("utf-8") + returned + (
        f"\r\n--{boundary}--\r\n".encode())


def status_of(reply: str, *, permanent: bool) -> str:
    """The enhanced status code of an SMTP reply, or a generic one (RFC 3463)."""
    match = re.match(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b", reply)
    if match:
        return match.group(1)
    return "5.0.0" if permanent else "4.0.0"
