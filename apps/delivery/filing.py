"""Filing mail into local mailboxes: the seam every delivery path goes
through, so that the recipients' active Sieve scripts (apps/sieve) run once
for each message, whichever way it came.

``route`` runs the scripts of the recipients of INBOX deliveries and turns
each such request into the store requests the scripts asked for (folders,
flags; none for a discard); ``queue_redirects`` queues their redirects in
the filing's transaction, ``send_replies`` their vacation replies after it.
``deliver_filed`` is both around ``store.deliver_batch`` for the paths that
file a message as it is: the MX with the checks off, submission (port 587
and the webmail), and what the server sends itself (DSNs, replies) to local
users; it has the group committer's batch shape. The checks' filing
(apps/antispam) calls ``route`` on the requests it builds with the verdicts.
Imports (apps/transfer) and APPEND file without it: they are not deliveries."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.delivery import arc, srs
from apps.delivery.linelength import limit_line_length
from apps.delivery.services import RecipientSpec, submit
from apps.delivery.vacation import answer_for_script
from apps.directory.models import Mailbox
from apps.sieve.commands import compile_script
from apps.sieve.interpreter import INBOX, Envelope, Outcome, evaluate
from apps.sieve.models import SieveScript
from apps.store import services as store
from apps.store import trace
from apps.store.models import Flag, Folder, TraceEvent
from apps.store.services import DeliveryRequest
from mailhost.counters import increment
from mailhost.errors import Conflict, Invalid, MailhostError, OverQuota

log = logging.getLogger("mailhost.sieve")

# RFC 5228 §4.2 leaves loop protection to the site: each redirect adds this
# field, and a message that carries it for the same mailbox is not redirected
# again (nor one that passed MAILHOST_SIEVE_MAX_HOPS Received fields).
REDIRECTED_FIELD = "X-Sieve-Redirected-By"


@dataclass(frozen=True)
class MailParameters:
    """What the MAIL command said of a message that a redirect must keep:
    REQUIRETLS (RFC 8689 §6: a redirected copy asks for TLS too) and
    BODY=BINARYMIME (RFC 3030 §3: every octet kept, relayed only with BDAT)."""

    require_tls: bool = False
    binarymime: bool = False


@dataclass
class MailboxPlan:
    """What a mailbox's active script decided for one message."""

    mailbox: Mailbox
    outcome: Outcome
    data: bytes  # the message as the script saw it
    sender: str  # the envelope sender the script saw
    parameters: MailParameters = MailParameters()
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
                sender: str, parameters: MailParameters = MailParameters(),
                ) -> dict[int, MailboxPlan]:
    """Run the active script of each mailbox that has one over its copy of
    the message (with its own verdict fields); mailboxes without one are left
    out. A script that fails at run time files into INBOX (RFC 5228 §2.10.6)."""
    if not messages:
        return {}
    scripts = {s.mailbox_id: s for s in SieveScript.objects.filter(
        mailbox__in=[m.pk for m, _ in messages], active=True)}
    now = timezone.localtime()
    plans: dict[int, MailboxPlan] = {}
    for mailbox, data in messages:
        script = scripts.get(mailbox.pk)
        if script is None:
            continue
        envelope = Envelope(sender, _recipient(mailbox, data),
                            settings.MAILHOST_SUBADDRESS_DELIMITER)
        try:
            outcome = evaluate(compile_script(script.content), data, envelope, now=now)
        except Exception:
            log.exception("sieve script %s of %s failed", script.name, mailbox.address)
            outcome = Outcome(error="script failed", filings={INBOX: ()})
        if outcome.error:
            log.warning("sieve script %s of %s: %s", script.name, mailbox.address,
                        outcome.error)
        plan = MailboxPlan(mailbox, outcome, data, sender, parameters=parameters)
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


@dataclass
class Routed:
    """``route``'s answer: the store requests to deliver and, for each, the
    index of the request it comes from; the scripts' plans (redirects and
    replies to send) by that index; the requests that scripts split (their
    copies go all or none); the trace events of requests that the scripts
    filed nowhere (discard, redirect), to record all the same."""

    requests: list[DeliveryRequest]
    owners: list[int]
    plans: list[tuple[int, MailboxPlan]] = field(default_factory=list)
    split: set[int] = field(default_factory=set)
    unfiled_events: list[tuple[int, TraceEvent]] = field(default_factory=list)


def route(requests: Sequence[DeliveryRequest], *, senders: Sequence[str],
          parameters: Sequence[MailParameters] = ()) -> Routed:
    """Run the active scripts of the recipients of each INBOX request (with
    its envelope sender in ``senders``, and its MAIL parameters in
    ``parameters``, if given) and return the requests that file the message
    where they said. One query when no recipient has a script."""
    inbox_ids = {m for r in requests if r.folder == INBOX for m in r.mailbox_ids}
    scripted = scripted_mailboxes(list(inbox_ids)) if inbox_ids else set()
    if not scripted:
        return Routed(list(requests), list(range(len(requests))))
    mailboxes = Mailbox.objects.in_bulk(list(scripted))
    routed = Routed([], [])
    for index, request in enumerate(requests):
        ids = [m for m in request.mailbox_ids if m in scripted] if request.folder == INBOX \
            else []
        if not ids:
            routed.requests.append(request)
            routed.owners.append(index)
            continue
        seen = (request.data[:request.added_at] + request.added_headers
                + request.data[request.added_at:]) if request.added_headers else request.data
        plans = plan_filing([(mailboxes[m], seen) for m in ids], sender=senders[index],
                            parameters=parameters[index] if parameters else MailParameters())
        # (folder, flag bits, keywords) -> mailboxes; those without a script as asked.
        groups: dict[tuple[str, int, tuple[str, ...]], list[int]] = defaultdict(list)
        for mailbox_id in request.mailbox_ids:
            plan = plans.get(mailbox_id)
            targets = plan.filings if plan else {
                request.folder: (request.flags, tuple(request.keywords))}
            for folder, (bits, keywords) in targets.items():
                groups[folder, bits | request.flags, (*request.keywords, *keywords)].append(
                    mailbox_id)
        events = request.trace_events
        for (folder, bits, keywords), mailbox_ids in groups.items():
            routed.requests.append(dataclasses.replace(
                request, mailbox_ids=mailbox_ids, folder=folder, flags=bits,
                keywords=keywords, check_quota=False, trace_events=events, messages=[]))
            routed.owners.append(index)
            events = []
        routed.unfiled_events += [(index, event) for event in events]
        routed.plans += [(index, plan) for plan in plans.values()]
        routed.split.add(index)
    return routed


def queue_redirects(plans: Sequence[MailboxPlan]) -> None:
    """The scripts' redirects, through the outbound queue (RFC 5228 §4.2: with
    the original envelope sender, SRS-rewritten as any forwarding is, so it
    passes SPF where it goes; long lines re-encoded as for any forwarding;
    ARC-sealed over the Authentication-Results field the checks wrote).
    Call it in the transaction that files the message: a message that a
    script sends on without keeping it is then never lost, even to a SIGKILL
    after the 250. A redirect that fails is logged and rolled back alone."""
    for plan in plans:
        if not plan.redirects:
            continue
        mailbox = plan.mailbox
        marked = f"{REDIRECTED_FIELD}: {mailbox.address}\r\n".encode() + plan.data
        binarymime = plan.parameters.binarymime
        try:
            # RFC 8617: sealed for the mailbox's domain over the checks' field;
            # RFC 3030 §3: a binary body keeps every octet.
            sealed = arc.seal(marked if binarymime else limit_line_length(marked),
                              domain=mailbox.address.rpartition("@")[2].lower())
            submit(sender=srs.forwarding_sender(plan.sender, mailbox.address),
                   recipients=[RecipientSpec(a) for a in plan.redirects], data=sealed,
                   require_tls=plan.parameters.require_tls, binarymime=binarymime)
            log.info("sieve redirect of %s to %s", mailbox.address, plan.redirects)
        except Exception:
            log.exception("sieve redirect of %s failed", mailbox.address)


def send_replies(plans: Sequence[MailboxPlan]) -> None:
    """The scripts' vacation replies, once the message is filed (committed).
    A failure is logged, never raised: the message is filed already."""
    for plan in plans:
        vacation = plan.outcome.vacation
        if vacation is not None and plan.outcome.rejection is None:
            answer_for_script(plan.mailbox, plan.data, sender=plan.sender,
                              reason=vacation.reason, subject=vacation.subject,
                              days=vacation.days, addresses=vacation.addresses)


@dataclass
class Filing:
    """A message for local mailboxes, and the envelope sender their scripts see."""

    request: DeliveryRequest
    sender: str
    parameters: MailParameters = MailParameters()  # for the scripts' redirects


def deliver_filed(filings: Sequence[Filing]) -> list[list[MailboxPlan] | MailhostError]:
    """``store.deliver_batch`` through the recipients' scripts, in one
    transaction with their redirects: for each filing, the plans whose
    replies to send (``send_replies``) once the transaction has committed, or
    the error that refused it (a message a script splits into several
    folders is refused whole or filed whole)."""
    routed = route([f.request for f in filings], senders=[f.sender for f in filings],
                   parameters=[f.parameters for f in filings])
    results: list[list[MailboxPlan] | MailhostError] = [[] for _ in filings]
    for index in routed.split:
        request = filings[index].request
        if request.check_quota and (full := store.mailboxes_over_quota(
                list(Mailbox.objects.filter(pk__in=list(request.mailbox_ids))),
                request.size)):
            results[index] = OverQuota(
                f"mailbox over quota: {', '.join(m.address for m in full)}")
    refused = {i for i, result in enumerate(results) if not isinstance(result, list)}
    kept = [i for i, owner in enumerate(routed.owners) if owner not in refused]
    with transaction.atomic():
        errors = store.deliver_batch([routed.requests[i] for i in kept])
        for i, error in zip(kept, errors, strict=True):
            if error is not None:
                results[routed.owners[i]] = error
                refused.add(routed.owners[i])
        trace.record([event for owner, event in routed.unfiled_events if owner not in refused])
        queue_redirects([plan for owner, plan in routed.plans if owner not in refused])
    for owner, plan in routed.plans:
        if isinstance(result := results[owner], list):
            result.append(plan)
    return results


def deliver_one(request: DeliveryRequest, *, sender: str) -> None:
    """One message through ``deliver_filed``, inside the caller's transaction
    if there is one: raises its error; the scripts' replies go out once the
    transaction has committed."""
    (result,) = deliver_filed([Filing(request, sender)])
    if isinstance(result, MailhostError):
        raise result
    if result:
        transaction.on_commit(partial(send_replies, result))
