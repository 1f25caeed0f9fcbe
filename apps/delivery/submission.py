"""The one submission service: how a signed-in user sends mail, whichever front
end they use (SMTP submission on 587/465, the webmail).

Each step raises a ``MailhostError`` that carries its SMTP reply, so the SMTP
handler answers with it and the webmail shows its message:

- ``check_sender`` at MAIL FROM: the envelope sender must be the user's
  (``directory.may_send_as``) and the per-hour limit not yet reached;
- ``check_recipient`` at each RCPT TO: the recipients limit, then the
  directory's resolution (unknown, disabled, over quota);
- ``submit_as_user`` (``asubmit_as_user`` from asyncio) after DATA: size,
  ``prepare`` (From check, Message-ID/Date, DKIM), local mailboxes through
  their Sieve scripts into the store (apps/delivery/filing.py), remote ones
  through the outbound queue, then the hour's count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from apps.delivery.filing import (
    Filing,
    MailboxPlan,
    MailParameters,
    deliver_filed,
    send_replies,
)
from apps.delivery.services import (
    RecipientSpec,
    SenderNotAllowed,
    aenqueue,
    hand_over,
    new_queue_id,
    prepare,
)
from apps.directory.models import DkimKey, Mailbox
from apps.directory.services import Resolution, directory_version, may_send_as, resolve
from apps.store import services as store
from apps.store import trace
from apps.store.batching import committer
from apps.store.models import TraceEvent, TraceKind
from mailhost.asyncdb import database_sync_to_async
from mailhost.counters import increment
from mailhost.errors import Disabled, Invalid, LimitExceeded, MailhostError, NotFound, OverQuota


class SendingLimitReached(MailhostError):
    """The user has sent as many messages this hour as allowed."""

    code = "sending_limit"
    # RFC 3463 X.7.1 is not quite it; Postfix and Exim answer rate limits so too.
    smtp_code = 450
    enhanced = "4.7.1"


class TooManyRecipients(LimitExceeded):
    """More recipients than one message may have."""

    code = "too_many_recipients"
    smtp_code = 452  # RFC 5321 §4.5.3.1.10
    enhanced = "4.5.3"


class BadRecipient(Invalid):
    """A recipient address that is not an address."""

    code = "bad_recipient"
    smtp_code = 501
    enhanced = "5.1.3"


class UnknownRecipient(NotFound):
    """A recipient in a hosted domain that does not exist."""

    code = "unknown_recipient"
    smtp_code = 550
    enhanced = "5.1.1"


class MessageTooLarge(MailhostError):
    """The message is larger than submission allows."""

    code = "message_too_large"
    smtp_code = 552  # RFC 1870 §6.3
    enhanced = "5.3.4"


@dataclass(frozen=True)
class AcceptedRecipient:
    """A recipient that passed ``check_recipient``, with where its mail goes and
    its RFC 3461 parameters."""

    address: str
    resolution: Resolution
    notify: str = ""
    orcpt: str = ""


@dataclass(frozen=True)
class Origin:
    """Where a submission came from, for the message trace: the listener (or
    "webmail"), the client's address, TLS, and the SMTP client's HELO name."""

    listener: str
    peer_ip: str
    tls: bool
    helo: str = ""


@dataclass(frozen=True)
class Submitted:
    queue_id: str
    local: int
    remote: int
    data: bytes  # as sent: trace field, added fields and signatures included


def _hour_key(mailbox: Mailbox) -> str:
    return f"submission:sent:{mailbox.pk}:{int(time.time() // 3600)}"


def check_sender(
    mailbox: Mailbox, address: str, *, upcoming: Sequence[str] = (), declared_size: int = 0,
) -> dict[str, Resolution | MailhostError]:
    """MAIL FROM: ``address`` must be one the user may send as, and the user
    under the per-hour limit. ``upcoming``: the recipients the client has
    already sent behind this MAIL (RFC 2920 pipelining), resolved in the same
    call for ``recipient_from``: one round trip for the group instead of one
    per RCPT."""
    return _check_sender(mailbox, address, upcoming=upcoming, declared_size=declared_size,
                         sent=cache.get(_hour_key(mailbox), 0), version=None)


def _check_sender(
    mailbox: Mailbox, address: str, *, upcoming: Sequence[str], declared_size: int, sent: int,
    version: str | None,
) -> dict[str, Resolution | MailhostError]:
    """``check_sender`` with the hour's count ``sent`` and the directory
    ``version`` (None: read per lookup) read already."""
    if not may_send_as(mailbox, address):
        raise SenderNotAllowed(f"Sender address <{address}> is not yours")
    limit = settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR
    if sent >= limit:
        raise SendingLimitReached(
            f"Sending limit of {limit} messages per hour reached, try later")
    outcomes: dict[str, Resolution | MailhostError] = {}
    accepted = 0
    for recipient in upcoming:
        # Past the limit, check_recipient refuses without a lookup.
        if accepted >= settings.MAILHOST_SUBMISSION_MAX_RECIPIENTS:
            break
        try:
            outcomes[recipient] = _resolve_recipient(recipient, declared_size, version)
            accepted += 1
        except MailhostError as error:
            outcomes[recipient] = error
    return outcomes


@dataclass(frozen=True)
class _SenderCheck:
    """A MAIL FROM to check, as ``_check_senders`` takes it."""

    mailbox: Mailbox
    address: str
    upcoming: Sequence[str]
    declared_size: int


def _check_senders(
    checks: Sequence[_SenderCheck],
) -> list[dict[str, Resolution | MailhostError] | MailhostError]:
    """``check_sender`` for the MAIL FROMs of several sessions at once: the
    hours' counts in one cache read and the directory version in one more,
    where each session paid both (and one more per pipelined RCPT)."""
    sent = cache.get_many(list({_hour_key(check.mailbox) for check in checks}))
    version = directory_version()
    results: list[dict[str, Resolution | MailhostError] | MailhostError] = []
    for check in checks:
        try:
            results.append(_check_sender(
                check.mailbox, check.address, upcoming=check.upcoming,
                declared_size=check.declared_size, sent=sent.get(_hour_key(check.mailbox), 0),
                version=version))
        except MailhostError as error:
            results.append(error)
    return results


def _check_count(accepted: int) -> None:
    limit = settings.MAILHOST_SUBMISSION_MAX_RECIPIENTS
    if accepted >= limit:
        raise TooManyRecipients(f"Too many recipients: at most {limit} per message")


def _resolve_recipient(
    address: str, declared_size: int, version: str | None = None,
) -> Resolution:
    try:
        resolution = resolve(address, version=version)
    except Invalid:
        raise BadRecipient(f"Bad recipient address syntax: {address}") from None
    except NotFound:
        raise UnknownRecipient(f"No such user here: <{address}>") from None
    except Disabled as error:
        raise Disabled(f"{error.message}: <{address}>") from None
    if resolution.mailboxes and store.mailboxes_over_quota(resolution.mailboxes,
                                                          declared_size):
        raise OverQuota(f"Mailbox over quota: {address}")
    return resolution


def check_recipient(address: str, *, accepted: int, declared_size: int = 0) -> Resolution:
    """RCPT TO: one more recipient after ``accepted`` others; where it goes."""
    _check_count(accepted)
    return _resolve_recipient(address, declared_size)


def recipient_from(outcome: Resolution | MailhostError, *, accepted: int) -> Resolution:
    """``check_recipient`` for a recipient that ``check_sender`` resolved
    already (``upcoming``): the same checks in the same order, no query."""
    _check_count(accepted)
    if isinstance(outcome, MailhostError):
        raise copy.copy(outcome)
    return outcome


async def acheck_sender(
    mailbox: Mailbox, address: str, *, upcoming: Sequence[str] = (), declared_size: int = 0,
) -> dict[str, Resolution | MailhostError]:
    """``check_sender`` from asyncio, in one thread hop with the MAIL FROMs of
    other sessions that arrive meanwhile (``_check_senders``)."""
    return await committer(_check_senders).submit(
        _SenderCheck(mailbox, address, tuple(upcoming), declared_size))


acheck_recipient = database_sync_to_async(check_recipient)


@dataclass
class _Prepared:
    data: bytes
    mailbox_ids: list[int]
    remote: list[RecipientSpec]
    acceptance: TraceEvent


def _prepare(
    mailbox: Mailbox, recipients: Sequence[AcceptedRecipient], data: bytes, *, sender: str,
    queue_id: str, received: bytes, origin: Origin,
    key_cache: dict[str, list[DkimKey]] | None = None, binarymime: bool = False,
) -> _Prepared:
    if len(data) > settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE:
        raise MessageTooLarge(
            f"Message too large: at most {settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE} bytes")
    signed = received + prepare(data, mailbox=mailbox, queue_id=queue_id, key_cache=key_cache,
                                binarymime=binarymime)
    mailbox_ids = list(dict.fromkeys(
        m.pk for r in recipients for m in r.resolution.mailboxes))
    remote = [RecipientSpec(external, r.notify, r.orcpt)
              for r in recipients for external in r.resolution.external]
    # The acceptance joins the message trace with the first durable step.
    acceptance = trace.accepted(
        TraceKind.SUBMITTED, queue_id=queue_id, listener=origin.listener,
        peer_ip=origin.peer_ip, helo=origin.helo, tls=origin.tls, user=mailbox.address,
        sender=sender, recipients=[r.address for r in recipients], data=signed)
    return _Prepared(signed, mailbox_ids, remote, acceptance)


def _count_sent(mailbox: Mailbox, delta: int = 1) -> None:
    increment(_hour_key(mailbox), timeout=3600, delta=delta)


def submit_as_user(
    mailbox: Mailbox, *, sender: str, recipients: Sequence[AcceptedRecipient], data: bytes,
    origin: Origin, ret: str = "", envid: str = "", queue_id: str = "", received: bytes = b"",
) -> Submitted:
    """Send a message for a signed-in user: checked, signed, delivered to the
    local recipients and queued for the remote ones in one transaction, then
    counted against the hour's limit. ``received`` is the front end's trace
    field, put above the signature. Raises before anything is kept."""
    queue_id = queue_id or new_queue_id()
    prepared = _prepare(mailbox, recipients, data, sender=sender, queue_id=queue_id,
                        received=received, origin=origin)
    hand_over(mailbox_ids=prepared.mailbox_ids, remote=prepared.remote, sender=sender,
              data=prepared.data, ret=ret, envid=envid, queue_id=queue_id,
              trace_events=[prepared.acceptance])
    _count_sent(mailbox)
    return Submitted(queue_id, len(prepared.mailbox_ids), len(prepared.remote), prepared.data)


@dataclass(frozen=True)
class _Draft:
    """A message at the end of DATA, as ``_prepare_batch`` takes it."""

    mailbox: Mailbox
    recipients: Sequence[AcceptedRecipient]
    data: bytes
    sender: str
    queue_id: str
    received: bytes
    origin: Origin
    key_cache: dict[str, list[DkimKey]] | None
    binarymime: bool


def _prepare_batch(drafts: Sequence[_Draft]) -> list[_Prepared | MailhostError]:
    """Prepare the messages whose DATA ended at the same moment, in one thread
    hop, and count them against their users' hourly limits with one increment
    per user: the cache round trip per message alone was a sixth of the
    listener's time in a profile. A refused message is not counted."""
    results: list[_Prepared | MailhostError] = []
    sent: dict[int, tuple[Mailbox, int]] = {}
    for draft in drafts:
        try:
            results.append(_prepare(
                draft.mailbox, draft.recipients, draft.data, sender=draft.sender,
                queue_id=draft.queue_id, received=draft.received, origin=draft.origin,
                key_cache=draft.key_cache, binarymime=draft.binarymime))
        except MailhostError as error:
            results.append(error)
            continue
        _, count = sent.get(draft.mailbox.pk, (draft.mailbox, 0))
        sent[draft.mailbox.pk] = (draft.mailbox, count + 1)
    for mailbox, count in sent.values():
        _count_sent(mailbox, count)
    return results


async def asubmit_as_user(
    mailbox: Mailbox, *, sender: str, recipients: Sequence[AcceptedRecipient], data: bytes,
    origin: Origin, ret: str = "", envid: str = "", queue_id: str = "", received: bytes = b"",
    key_cache: dict[str, list[DkimKey]] | None = None, require_tls: bool = False,
    binarymime: bool = False,
) -> Submitted:
    """``submit_as_user`` for asyncio front ends: the local copies and the
    queued one each go through a group committer (DESIGN.md "Group commit"),
    so they share a batch with the mail arriving at the same moment.
    ``key_cache``: the connection's DKIM keys (``services.sign``).

    The message is prepared and counted against the hour's limit together
    with the others whose DATA ended at the same moment (``_prepare_batch``),
    before the hand-over, and the count taken back if the hand-over fails:
    the messages being handed over at that moment already count for a
    concurrent MAIL FROM.
    ``require_tls`` (RFC 8689 §4.3) and ``binarymime`` (RFC 3030 §3) go with
    the queued copy."""
    queue_id = queue_id or new_queue_id()
    prepared = await committer(_prepare_batch).submit(_Draft(
        mailbox, recipients, data, sender, queue_id, received, origin, key_cache, binarymime))
    acceptance = [prepared.acceptance]
    plans: list[MailboxPlan] = []
    try:
        if prepared.mailbox_ids:
            plans = await committer(deliver_filed).submit(Filing(store.DeliveryRequest(
                prepared.mailbox_ids, prepared.data, queue_id=queue_id,
                trace_events=acceptance), sender, MailParameters(require_tls, binarymime)))
            acceptance = []
        if prepared.remote:
            await aenqueue(sender=sender, recipients=prepared.remote, data=prepared.data,
                           ret=ret, envid=envid, queue_id=queue_id, trace_events=acceptance,
                           require_tls=require_tls, binarymime=binarymime)
    except Exception:
        await database_sync_to_async(_count_sent)(mailbox, -1)
        raise
    if plans:
        await database_sync_to_async(send_replies)(plans)
    return Submitted(queue_id, len(prepared.mailbox_ids), len(prepared.remote), prepared.data)
