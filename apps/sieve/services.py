"""Sieve scripts: stored per mailbox, validated on upload, one active; run
when a message is filed (``plan_filing``), their redirects and vacation
replies carried out once the message is filed (``carry_out``).

ManageSieve (apps/sieve/managesieve.py) is a thin front end on the script
functions here; the spam filing path (apps/antispam/services.py) calls the
filing ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.delivery import srs
from apps.delivery.linelength import limit_line_length
from apps.delivery.services import RecipientSpec, submit
from apps.delivery.vacation import answer_for_script
from apps.directory.models import Mailbox
from apps.sieve.commands import compile_script
from apps.sieve.grammar import Command, SieveSyntaxError
from apps.sieve.interpreter import INBOX, Envelope, Outcome, evaluate
from apps.sieve.models import SieveScript
from apps.store import services as store
from apps.store.models import Flag, Folder
from mailhost.counters import increment
from mailhost.errors import Conflict, Invalid, LimitExceeded, NotFound

log = logging.getLogger("mailhost.sieve")

# RFC 5228 §4.2 leaves loop protection to the site: each redirect adds this
# field, and a message that carries it for the same mailbox is not redirected
# again (nor one that passed MAILHOST_SIEVE_MAX_HOPS Received fields).
REDIRECTED_FIELD = "X-Sieve-Redirected-By"


class ScriptInvalid(Invalid):
    """The script is not valid Sieve."""

    code = "sieve_invalid"


class ScriptActive(Conflict):
    """The active script cannot be deleted (RFC 5804 §2.10)."""

    code = "sieve_active"


# --- scripts ------------------------------------------------------------------------


def check_script(content: str) -> list[Command]:
    """The compiled script, or ScriptInvalid saying which line is at fault."""
    if len(content.encode()) > settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE:
        raise LimitExceeded("script larger than "
                            f"{settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE} octets", quota="MAXSIZE")
    try:
        return compile_script(content)
    except SieveSyntaxError as error:
        raise ScriptInvalid(str(error), line=error.line) from None


def _valid_name(name: str) -> str:
    # RFC 5804 §1.6: no control characters, no more than the storage allows.
    if not name or len(name) > 128 or any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f
                                          for c in name) or "\u2028" in name:
        raise Invalid(f"{name[:40]!r} is not a valid script name")
    return name


def have_space(mailbox: Mailbox, name: str, size: int) -> None:
    """RFC 5804 §2.5: raises LimitExceeded when a script of ``size`` octets
    under ``name`` would not fit."""
    if size > settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE:
        raise LimitExceeded("script larger than "
                            f"{settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE} octets", quota="MAXSIZE")
    scripts = SieveScript.objects.filter(mailbox=mailbox)
    if (scripts.count() >= settings.MAILHOST_SIEVE_MAX_SCRIPTS
            and not scripts.filter(name=name).exists()):
        raise LimitExceeded(f"at most {settings.MAILHOST_SIEVE_MAX_SCRIPTS} scripts",
                            quota="MAXSCRIPTS")


def put_script(mailbox: Mailbox, name: str, content: str) -> SieveScript:
    """Store (create or replace) a script after checking it (RFC 5804 §2.6)."""
    _valid_name(name)
    check_script(content)
    have_space(mailbox, name, len(content.encode()))
    script, _ = SieveScript.objects.update_or_create(
        mailbox=mailbox, name=name, defaults={"content": content, "updated": timezone.now()})
    return script


def list_scripts(mailbox: Mailbox) -> list[SieveScript]:
    return list(SieveScript.objects.filter(mailbox=mailbox).order_by("name"))


def get_script(mailbox: Mailbox, name: str) -> SieveScript:
    script = SieveScript.objects.filter(mailbox=mailbox, name=name).first()
    if script is None:
        raise NotFound(f"no script named {name[:80]}")
    return script


def set_active(mailbox: Mailbox, name: str) -> None:
    """Make ``name`` the active script; the empty name deactivates all
    (RFC 5804 §2.8)."""
    with transaction.atomic():
        if name:
            script = get_script(mailbox, name)
        SieveScript.objects.filter(mailbox=mailbox, active=True).exclude(name=name).update(
            active=False)
        if name:
            SieveScript.objects.filter(pk=script.pk).update(active=True)


def delete_script(mailbox: Mailbox, name: str) -> None:
    script = get_script(mailbox, name)
    if script.active:
        raise ScriptActive(f"{name[:80]} is the active script")
    script.delete()


def rename_script(mailbox: Mailbox, old: str, new: str) -> None:
    """RFC 5804 §2.11.1: the active script stays active under its new name."""
    _valid_name(new)
    script = get_script(mailbox, old)
    try:
        with transaction.atomic():
            SieveScript.objects.filter(pk=script.pk).update(name=new, updated=timezone.now())
    except IntegrityError:
        raise Conflict(f"a script named {new[:80]} exists already") from None


# --- filing -------------------------------------------------------------------------


@dataclass
class MailboxPlan:
    """What a mailbox's active script decided for one message."""

    mailbox: Mailbox
    outcome: Outcome
    data: bytes  # the message as the script saw it
    # Where it is filed: folder -> (system flag bits, keywords).
    filings: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    redirects: list[str] = field(default_factory=list)


def flag_bits(names: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    """Sieve flag names (RFC 5232 §3, case-insensitive) as the store keeps
    them: system flags as bits, keywords as written; \\Recent cannot be set."""
    by_name = {name.lower(): bit for name, bit in Flag.NAMES.items()}
    bits, keywords = 0, []
    for name in names:
        if name.lower() in by_name:
            bits |= by_name[name.lower()]
        elif not name.startswith("\\"):
            keywords.append(name)
    return bits, tuple(keywords)


def _recipient(mailbox: Mailbox, data: bytes) -> str:
    """The envelope recipient for ``envelope "to"``: our Received field names
    it when the message had one recipient (apps/smtp/received.py), with its
    sub-address; the mailbox's address otherwise."""
    head = data[:data.find(b"\r\n\r\n")] if b"\r\n\r\n" in data else data
    start = head.find(b"\tfor <")
    if start >= 0:
        end = head.find(b">", start)
        address = head[start + 6:end].decode("utf-8", errors="replace")
        local, _, domain = address.rpartition("@")
        base = local.split(settings.MAILHOST_SUBADDRESS_DELIMITER or "\0", 1)[0]
        if f"{base}@{domain}".lower() == mailbox.address.lower():
            return address
    return mailbox.address


def _hops(data: bytes) -> int:
    head = data[:data.find(b"\r\n\r\n")] if b"\r\n\r\n" in data else data
    return sum(1 for line in head.split(b"\r\n") if line[:9].lower() == b"received:")


def _redirect_refusal(mailbox: Mailbox, data: bytes) -> str:
    head = data[:data.find(b"\r\n\r\n")].lower() if b"\r\n\r\n" in data else data.lower()
    marker = f"{REDIRECTED_FIELD}: {mailbox.address}".lower().encode()
    if marker in head:
        return "loop: redirected by this mailbox before"
    if _hops(data) >= settings.MAILHOST_SIEVE_MAX_HOPS:
        return "loop: too many hops"
    count = increment(f"sieve-redirects:{mailbox.pk}", timeout=3600)
    if count > settings.MAILHOST_SIEVE_REDIRECTS_PER_HOUR:
        return "rate limit"
    return ""


def scripted_mailboxes(mailbox_ids: Sequence[int]) -> set[int]:
    """Those of the mailboxes with an active script (one query for a batch)."""
    return set(SieveScript.objects.filter(mailbox_id__in=list(mailbox_ids), active=True)
               .values_list("mailbox_id", flat=True))


def plan_filing(messages: Sequence[tuple[Mailbox, bytes]], *,
                sender: str) -> dict[int, MailboxPlan]:
    """Run the active script of each mailbox that has one over its copy of
    the message (with its own verdict fields); mailboxes without one are left
    out. A script that fails at run time files into INBOX (RFC 5228 §2.10.6)."""
    if not messages:
        return {}
    scripts = {s.mailbox_id: s for s in SieveScript.objects.filter(
        mailbox__in=[m.pk for m, _ in messages], active=True)}
    plans: dict[int, MailboxPlan] = {}
    for mailbox, data in messages:
        script = scripts.get(mailbox.pk)
        if script is None:
            continue
        envelope = Envelope(sender, _recipient(mailbox, data),
                            settings.MAILHOST_SUBADDRESS_DELIMITER)
        try:
            outcome = evaluate(compile_script(script.content), data, envelope)
        except Exception:
            log.exception("sieve script %s of %s failed", script.name, mailbox.address)
            outcome = Outcome(error="script failed", filings={INBOX: ()})
        if outcome.error:
            log.warning("sieve script %s of %s: %s", script.name, mailbox.address,
                        outcome.error)
        plan = MailboxPlan(mailbox, outcome, data)
        for address in outcome.redirects:
            refusal = _redirect_refusal(mailbox, data)
            if refusal:
                # Kept rather than lost: the user sees what was not sent on.
                log.warning("sieve redirect of %s to <%s> refused: %s", mailbox.address,
                            address, refusal)
                outcome.filings.setdefault(INBOX, ())
            else:
                plan.redirects.append(address)
        if outcome.rejection is not None:
            # RFC 5429 §2.1/§2.2: this runs after the 250 (the checks and the
            # filing follow the acceptance), where a rejection could only be
            # a bounce to an envelope sender that spam forges: no backscatter,
            # the message is discarded as the user asked, and logged.
            log.info("sieve reject of %s from <%s> discarded after acceptance: %s",
                     mailbox.address, sender, outcome.rejection[:200])
        plan.filings = {folder: flag_bits(flags) for folder, flags
                        in _existing(mailbox, outcome.filings).items()}
        plans[mailbox.pk] = plan
    return plans


def _existing(mailbox: Mailbox, filings: dict[str, tuple[str, ...]]
              ) -> dict[str, tuple[str, ...]]:
    """RFC 5228 §4.1 lets fileinto create a missing folder, as Dovecot's
    lda_mailbox_autocreate does; a name the store refuses files into INBOX."""
    found = set(Folder.objects.filter(mailbox=mailbox, name__in=list(filings))
                .values_list("name", flat=True))
    existing: dict[str, tuple[str, ...]] = {}
    for folder, flags in filings.items():
        if folder not in found and folder.upper() != INBOX:
            try:
                store.create_folder(mailbox, folder)
            except Conflict:
                pass  # created meanwhile by another delivery
            except Invalid as error:
                log.warning("sieve fileinto %r of %s: %s", folder, mailbox.address, error)
                folder = INBOX
        existing.setdefault(INBOX if folder.upper() == INBOX else folder, flags)
    return existing


def carry_out(plans: Sequence[MailboxPlan], *, sender: str) -> None:
    """After the message is filed: its redirects through the outbound queue
    (RFC 5228 §4.2: with the original envelope sender, SRS-rewritten as any
    forwarding is, so it passes SPF where it goes; long lines re-encoded as for
    any forwarding) and vacation replies.
    A failure is logged, never raised: the message is filed already."""
    for plan in plans:
        mailbox = plan.mailbox
        if plan.redirects:
            marked = f"{REDIRECTED_FIELD}: {mailbox.address}\r\n".encode() + plan.data
            try:
                submit(sender=srs.forwarding_sender(sender, mailbox.address),
                       recipients=[RecipientSpec(a) for a in plan.redirects],
                       data=limit_line_length(marked))
                log.info("sieve redirect of %s to %s", mailbox.address, plan.redirects)
            except Exception:
                log.exception("sieve redirect of %s failed", mailbox.address)
        vacation = plan.outcome.vacation
        if vacation is not None and plan.outcome.rejection is None:
            answer_for_script(mailbox, plan.data, sender=sender, reason=vacation.reason,
                              subject=vacation.subject, days=vacation.days,
                              addresses=vacation.addresses)
