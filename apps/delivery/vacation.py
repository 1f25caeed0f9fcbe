"""Vacation auto-replies (RFC 3834, RFC 5230): a Sieve script's vacation
action, carried out when a message is filed (apps/delivery/filing.py; never
for Junk). The webmail's automatic reply is one: ``set_vacation`` keeps its
settings and writes them into the mailbox's active script
(apps/delivery/rules.py).

A reply goes out only when every rule of RFC 3834 allows it, at most once per
sender per :days (MAILHOST_VACATION_INTERVAL_DAYS by default), from the null
envelope sender, through the same hand-over as every other message (local
store or queue)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.message import Message as ParsedHeaders
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.delivery.dsn import headers_of
from apps.delivery.models import Vacation, VacationReply
from apps.delivery.rules import write_rules
from apps.delivery.services import RecipientSpec, sign, submit
from apps.directory.addresses import split_address, strip_subaddress
from apps.directory.models import Mailbox
from apps.directory.services import own_addresses
from mailhost.errors import Invalid, MailhostError

log = logging.getLogger("mailhost.delivery")

# RFC 3834 §2: never answer mailing lists or bulk mail (RFC 2369 List-* fields,
# the traditional Precedence field).
_LIST_FIELDS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help")
_BULK_PRECEDENCE = {"bulk", "list", "junk"}


def _automatic_sender(sender: str) -> bool:
    """RFC 3834 §2: no reply to the null sender or to addresses that belong to
    software rather than people (MAILER-DAEMON, owner-*, *-request)."""
    if not sender or sender == "<>":
        return True
    local = sender.rpartition("@")[0].lower()
    return (local in ("mailer-daemon", "") or local.startswith("owner-")
            or local.endswith("-request"))


def _automatic_message(headers: ParsedHeaders) -> bool:
    """RFC 3834 §2 and §5: auto-submitted, list and bulk messages get no reply."""
    auto = str(headers.get("Auto-Submitted", "no")).split(";")[0].strip().lower()
    if auto != "no":
        return True
    if any(headers.get(name) is not None for name in _LIST_FIELDS):
        return True
    return str(headers.get("Precedence", "")).strip().lower() in _BULK_PRECEDENCE


def _base_address(address: str) -> str | None:
    try:
        local, domain = split_address(address)
    except Invalid:
        return None
    base = strip_subaddress(local, settings.MAILHOST_SUBADDRESS_DELIMITER) or local
    return f"{base}@{domain}"


def _addressed_to(headers: ParsedHeaders, addresses: Sequence[str]) -> bool:
    """RFC 3834 §2: reply only when one of the user's own addresses is in To or
    Cc (not, say, a list address or a Bcc from someone who hid the user)."""
    listed = getaddresses([str(v) for name in ("To", "Cc") for v in headers.get_all(name, [])])
    found = {_base_address(address) for _, address in listed if address}
    return any(address in found for address in addresses)


def vacation_of(mailbox: Mailbox) -> Vacation:
    return Vacation.objects.filter(mailbox=mailbox).first() or Vacation(mailbox=mailbox)


def set_vacation(
    mailbox: Mailbox, *, enabled: bool, subject: str, body: str, start: date | None,
    end: date | None,
) -> Vacation:
    """Turn the auto-reply on or off and set its text and dates, and write it
    into the mailbox's active Sieve script. Each change starts a new absence:
    who was answered before is answered again."""
    if start and end and end < start:
        raise Invalid("the last day comes before the first", field="end")
    if enabled and not body.strip():
        raise Invalid("write the text of the reply", field="body")
    with transaction.atomic():
        vacation, _ = Vacation.objects.update_or_create(mailbox=mailbox, defaults={
            "enabled": enabled, "subject": subject.strip(), "body": body, "start": start,
            "end": end})
        VacationReply.objects.filter(mailbox=mailbox).delete()
        write_rules(mailbox)
    return vacation


def build_reply(vacation: Vacation, headers: ParsedHeaders, *, to: str) -> bytes:
    """The auto-reply (RFC 3834 §3): Auto-Submitted: auto-replied, threaded to
    the original, its subject the user's or "Auto: " and the original's."""
    mailbox = vacation.mailbox
    message = EmailMessage(policy=SMTP.clone(cte_type="7bit"))
    local, _, domain = mailbox.address.rpartition("@")
    message["From"] = Address(mailbox.user.display_name, local, domain)
    message["To"] = to
    original_subject = str(headers.get("Subject", "")).strip()
    # RFC 3834 §3.1.5: a subject of the user's choice, or "Auto:" before the original's.
    message["Subject"] = vacation.subject or f"Auto: {original_subject}".strip()
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=settings.MAILHOST_HOSTNAME)
    original_id = str(headers.get("Message-ID", "")).strip()
    if original_id:  # RFC 3834 §3.1.6 and RFC 5322 §3.6.4
        message["In-Reply-To"] = original_id
        references = str(headers.get("References", "")).split()
        message["References"] = " ".join([*references, original_id])
    message["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    body = vacation.body or ""
    message.set_content(body, cte=None if body.isascii() else "quoted-printable")
    return message.as_bytes()


def answer_for_script(
    mailbox: Mailbox, data: bytes, *, sender: str, reason: str, subject: str,
    days: int | None, addresses: Sequence[str],
) -> int:
    """A Sieve vacation action (RFC 5230 §4) under RFC 3834's rules, with the
    script's text, subject and :days; one record per sender (RFC 5230 §4.2)
    whatever script or setting asked for the reply. Returns how many went out
    (0 or 1); a failure is logged, never raised: the message is filed."""
    if _automatic_sender(sender):
        return 0
    headers = BytesHeaderParser().parsebytes(headers_of(data))
    # RFC 5230 §4.5: :addresses adds to the user's own addresses.
    own = [*own_addresses(mailbox), *(a.lower() for a in addresses)]
    if _automatic_message(headers) or not _addressed_to(headers, own):
        return 0
    if _base_address(sender) in own:  # never answer the user's own mail
        return 0
    vacation = Vacation(mailbox=mailbox, subject=subject, body=reason)
    # RFC 5230 §4.1: at least a day between replies; the site's interval by default.
    interval = timedelta(days=max(1, days)) if days is not None else None
    return _reply_logged(vacation, headers, sender.lower(), interval=interval)


def _reply_logged(vacation: Vacation, headers: ParsedHeaders, sender: str,
                  interval: timedelta | None = None) -> int:
    try:
        return _reply_once(vacation, headers, sender, interval)
    except MailhostError as error:  # the sender's hosted mailbox is gone or full
        log.warning("vacation reply of %s to <%s> failed: %s", vacation.mailbox.address,
                    sender, error)
    except Exception:
        # The message is filed and acknowledged: a failed reply must not
        # turn into a 451 that makes the sender deliver it twice.
        log.exception("vacation reply of %s to <%s> failed", vacation.mailbox.address,
                      sender)
    return 0


def _reply_once(vacation: Vacation, headers: ParsedHeaders, sender: str,
                interval: timedelta | None = None) -> int:
    now = timezone.now()
    interval = interval or timedelta(days=settings.MAILHOST_VACATION_INTERVAL_DAYS)
    with transaction.atomic():
        # The row is the lock: two messages from one sender filed at once
        # (two workers) send one reply.
        replied, created = VacationReply.objects.select_for_update().get_or_create(
            mailbox=vacation.mailbox, sender=sender, defaults={"replied": now})
        if not created:
            if replied.replied > now - interval:
                return 0
            replied.replied = now
            replied.save(update_fields=["replied"])
        data = build_reply(vacation, headers, to=sender)
        data = sign(data, vacation.mailbox.address.rpartition("@")[2])
        # RFC 3834 §3.3: from the null envelope sender, so that nothing answers
        # the answer; §4: to the envelope sender of the original (Return-Path).
        submit(sender="", recipients=[RecipientSpec(sender)], data=data)
    log.info("vacation reply from %s to <%s>", vacation.mailbox.address, sender)
    return 1
