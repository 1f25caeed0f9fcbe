"""Delivery services: accept mail for sending, run the outbound queue, report.

``submit`` is the one way a front end sends mail (SMTP submission, webmail,
forwarding, bounces): local recipients go straight into the store, remote
ones into the queue. The queue is claimed in batches (``claim_due``), each
claim is one attempt for one destination domain (``attempt``), and the
outcome is recorded per recipient: delivered, retried with backoff, or
bounced with an RFC 3464 report to the envelope sender."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from apps.delivery import mtasts, srs, tlsrpt
from apps.delivery.client import (
    ConnectionFailed,
    DeliverySession,
    OutgoingMessage,
    OutgoingRecipient,
    tls_not_required,
)
from apps.delivery.dsn import RecipientReport, build_dsn, headers_of, status_of
from apps.delivery.linelength import limit_line_length
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.delivery.mtasts import Policy
from apps.delivery.mx import DestinationError, Hop, resolve_hops
from apps.delivery.signing import SigningKey, dkim_sign_all
from apps.delivery.transports import parse_transports, route_for
from apps.directory.models import DkimKey, Mailbox
from apps.directory.services import may_send_as, signing_keys
from apps.store import mime, trace
from apps.store import services as store
from apps.store.batching import committer
from apps.store.blobs import get_blob_store
from apps.store.models import TraceEvent, TraceKind
from mailhost import metrics
from mailhost.compiled import CompiledInsert
from mailhost.errors import MailhostError

log = logging.getLogger("mailhost.delivery")


@dataclass(frozen=True)
class RecipientSpec:
    """A remote recipient with its RFC 3461 parameters (NOTIFY, ORCPT)."""

    address: str
    notify: str = ""
    orcpt: str = ""


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


class SenderNotAllowed(MailhostError):
    """The message claims a sender that is not the user's."""

    code = "sender_not_allowed"
    smtp_code = 553
    enhanced = "5.7.1"


def sign(data: bytes, domain: str, key_cache: dict[str, list[DkimKey]] | None = None) -> bytes:
    """DKIM-sign for ``domain`` with each of its keys (RSA, and Ed25519 beside
    it as RFC 8463 §3 suggests), if it is hosted here. ``key_cache`` keeps the
    keys looked up for one client connection, so that its next messages need
    no query (a rotated key is used from the next connection on)."""
    if key_cache is None:
        keys = signing_keys(domain)
    elif domain in key_cache:
        keys = key_cache[domain]
    else:
        keys = key_cache[domain] = signing_keys(domain)
    if not keys:
        return data
    return dkim_sign_all(data, domain=domain, keys=[
        SigningKey(key.selector, key.private_key, key.algorithm) for key in keys])


_DATE_FIELD = re.compile(rb"(?im)^date:")
_FROM_FIELD = re.compile(rb"(?im)^from[ \t]*:")  # RFC 5322 §4.5.8: WSP before ":"


def prepare(
    content: bytes, *, mailbox: Mailbox, queue_id: str,
    key_cache: dict[str, list[DkimKey]] | None = None, binarymime: bool = False,
) -> bytes:
    """Check and complete a submitted message (RFC 6409 §8): every From address
    must be one the user may send as; a missing Message-ID or Date is added;
    then body lines too long to relay are re-encoded (``limit_line_length``)
    and it is DKIM-signed for its From domain. A binary body (RFC 3030 §3)
    keeps every octet: it is relayed only to servers that take it as it is."""
    # RFC 5322 §3.6: exactly one From field. With two, we would check one and a
    # reader might show the other.
    if len(_FROM_FIELD.findall(headers_of(content))) > 1:
        raise SenderNotAllowed("The message has more than one From field")
    # The From addresses and the Message-ID are in the header section: the body
    # needs no parse here (and the queue keeps the bytes unparsed).
    info = mime.analyze(headers_of(content))
    senders = [f"{local}@{host}" for _, _, local, host in info.envelope[2] or []
               if local and host]
    if not senders:
        raise SenderNotAllowed("The message has no From address")
    for sender in senders:
        if not may_send_as(mailbox, sender):
            raise SenderNotAllowed(f"From address <{sender}> is not yours")
    added = b""
    if not info.message_id:  # RFC 6409 §8.3
        added += (f"Message-ID: <{queue_id}.{secrets.token_hex(8)}@"
                  f"{settings.MAILHOST_HOSTNAME}>\r\n").encode()
    if not _DATE_FIELD.search(headers_of(content)):  # RFC 6409 §8.2
        added += f"Date: {format_datetime(timezone.now())}\r\n".encode()
    data = added + content if binarymime else limit_line_length(added + content)
    if len(senders) == 1:
        data = sign(data, senders[0].rpartition("@")[2].lower(), key_cache)
    return data


# Set while a queue run is on its way: commits in the meantime need no run of
# their own, it will see them (run_queue clears the mark before it claims).
KICK_PENDING = "delivery:queue-kick-pending"


def _send_kick() -> None:
    if cache.add(KICK_PENDING, 1, timeout=settings.MAILHOST_QUEUE_KICK_TIMEOUT):
        current_app.send_task("apps.delivery.tasks.run_queue")


def _kick() -> None:
    """Wake the queue runner now rather than at its next beat: once per commit,
    and not again while a run is pending."""
    if settings.MAILHOST_QUEUE_KICK:
        transaction.on_commit(_send_kick)


@dataclass
class QueueRequest:
    """A message for remote recipients, as ``enqueue`` takes it."""

    sender: str
    recipients: Sequence[RecipientSpec]
    data: bytes
    ret: str = ""
    envid: str = ""
    queue_id: str = ""
    trace_events: Sequence[TraceEvent] = ()
    # RFC 8689 REQUIRETLS and RFC 3030 BODY=BINARYMIME, kept with the message.
    require_tls: bool = False
    binarymime: bool = False


def enqueue_batch(requests: Sequence[QueueRequest]) -> list[OutboundMessage]:
    """Queue several messages in one transaction and one round of fsyncs: the
    bytes are fsynced and the rows committed when this returns (DESIGN.md
    "Storage"), each with its ``trace_events`` (the SMTP acceptance) and the
    message trace's "queued"."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.MAILHOST_QUEUE_LIFETIME)
    # No lock held while fsyncing. Unparsed: queued bytes are only sent, never
    # shown; a local copy of the same bytes gets its row parsed when filed.
    blobs = store.write_blobs([r.data for r in requests], parse=False)
    with transaction.atomic():
        store.add_blob_rows(blobs)
        messages = [OutboundMessage(
            queue_id=r.queue_id or new_queue_id(), blob=blob,
            sender="" if r.sender == "<>" else r.sender,  # aiosmtpd's null sender
            ret=r.ret, envid=r.envid, require_tls=r.require_tls, binarymime=r.binarymime,
            arrival=now, expires=expires)
            for r, blob in zip(requests, blobs, strict=True)]
        _insert_messages.insert(messages)
        _insert_entries.insert([
            QueueEntry(message=message, recipient=r.address,
                       domain=r.address.rpartition("@")[2].lower(), notify=r.notify,
                       orcpt=r.orcpt, next_attempt=now)
            for request, message in zip(requests, messages, strict=True)
            for r in request.recipients
        ])
        events: list[TraceEvent] = []
        for request, message in zip(requests, messages, strict=True):
            addresses = [r.address for r in request.recipients]
            events += [*request.trace_events, trace.event(
                TraceKind.QUEUED, message.queue_id, addresses=[message.sender, *addresses],
                message_id=trace.message_id_of(request.data), sender=message.sender,
                recipients=addresses)]
        trace.record(events)
        _kick()
    for request, message in zip(requests, messages, strict=True):
        log.info("queued id=%s from=<%s> to=%s size=%d", message.queue_id, message.sender,
                 ",".join(f"<{r.address}>" for r in request.recipients), len(request.data))
    return messages


_insert_messages = CompiledInsert(OutboundMessage, return_pks=True)
_insert_entries = CompiledInsert(QueueEntry)


def enqueue(
    *, sender: str, recipients: Sequence[RecipientSpec], data: bytes, ret: str = "",
    envid: str = "", queue_id: str = "", trace_events: Sequence[TraceEvent] = (),
    require_tls: bool = False, binarymime: bool = False,
) -> OutboundMessage:
    """Queue one message (``enqueue_batch``)."""
    return enqueue_batch([QueueRequest(sender, recipients, data, ret, envid, queue_id,
                                       trace_events, require_tls, binarymime)])[0]


async def aenqueue(
    *, sender: str, recipients: Sequence[RecipientSpec], data: bytes, ret: str = "",
    envid: str = "", queue_id: str = "", trace_events: Sequence[TraceEvent] = (),
    require_tls: bool = False, binarymime: bool = False,
) -> OutboundMessage:
    """``enqueue`` for asyncio front ends, through the running loop's group
    committer: messages queued at the same moment share a transaction."""
    return await committer(enqueue_batch).submit(QueueRequest(
        sender, recipients, data, ret, envid, queue_id, trace_events, require_tls, binarymime))


def submit(
    *, sender: str, recipients: Sequence[RecipientSpec], data: bytes, ret: str = "",
    envid: str = "", require_tls: bool = False, binarymime: bool = False,
) -> OutboundMessage | None:
    """Send a message: resolve each recipient, deliver to the local mailboxes at
    once, queue the rest. Returns the queued message, if any. An unknown or
    disabled local recipient raises (NotFound, Disabled) before anything is kept.
    A report to a forwarded message's SRS sender goes to the original sender."""
    mailbox_ids: list[int] = []
    remote: list[RecipientSpec] = []
    for recipient in recipients:
        resolution = srs.resolve_recipient(recipient.address)
        mailbox_ids.extend(m.pk for m in resolution.mailboxes)
        remote.extend(RecipientSpec(address, recipient.notify, recipient.orcpt)
                      for address in resolution.external)
    return hand_over(mailbox_ids=list(dict.fromkeys(mailbox_ids)), remote=remote,
                     sender=sender, data=data, ret=ret, envid=envid, require_tls=require_tls,
                     binarymime=binarymime)


def hand_over(
    *, mailbox_ids: Sequence[int], remote: Sequence[RecipientSpec], sender: str, data: bytes,
    ret: str = "", envid: str = "", queue_id: str = "", trace_events: Sequence[TraceEvent] = (),
    require_tls: bool = False, binarymime: bool = False,
) -> OutboundMessage | None:
    """Deliver to the local mailboxes (through their Sieve scripts) and queue
    for the remote recipients, in one transaction: both or neither.
    ``trace_events`` (the acceptance) are recorded with the first of the two."""
    # The filing seam sends (redirects, replies) through this module.
    from apps.delivery.filing import deliver_one

    with transaction.atomic():
        if mailbox_ids:
            deliver_one(store.DeliveryRequest(list(mailbox_ids), data, queue_id=queue_id,
                                              trace_events=list(trace_events)), sender=sender)
            trace_events = ()
        if remote:
            return enqueue(sender=sender, recipients=remote, data=data, ret=ret, envid=envid,
                           queue_id=queue_id, trace_events=trace_events,
                           require_tls=require_tls, binarymime=binarymime)
    return None


# --- the queue ----------------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(next_attempt__lte=now) & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))


def claim_due(
    *, now: datetime | None = None, limit: int | None = None, domain: str | None = None,
    on_claimed: Callable[[str, list[int]], None] | None = None,
) -> list[tuple[str, list[int]]]:
    """Lease the due entries (of one destination ``domain``, or all), in claims
    of one destination domain and about MAILHOST_QUEUE_CLAIM_SIZE entries each,
    a message's entries in one claim. ``on_claimed`` runs for each claim after
    the lease has committed (Celery enqueueing).

    On PostgreSQL the rows are taken with ``SELECT … FOR UPDATE SKIP LOCKED`` so
    that concurrent runners split the work; on SQLite the transaction is
    ``BEGIN IMMEDIATE`` and the runners queue behind each other."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.MAILHOST_QUEUE_CLAIM_SECONDS)
    size = settings.MAILHOST_QUEUE_CLAIM_SIZE
    claims: list[tuple[str, list[int]]] = []
    with transaction.atomic():
        due = QueueEntry.objects.filter(_due(now))
        if domain is not None:
            due = due.filter(domain=domain)
        rows = list(due.order_by("next_attempt", "pk").select_for_update(skip_locked=True)
                    .values_list("pk", "domain", "message_id")
                    [: limit or settings.MAILHOST_QUEUE_BATCH])
        chunks: dict[str, list[list[int]]] = defaultdict(lambda: [[]])
        last_message: dict[str, int] = {}
        for pk, entry_domain, message_id in rows:
            own = chunks[entry_domain]
            if len(own[-1]) >= size and last_message[entry_domain] != message_id:
                own.append([])
            own[-1].append(pk)
            last_message[entry_domain] = message_id
        for ids in (ids for own in chunks.values() for ids in own):
            token = secrets.token_hex(16)
            # The due filter again: a concurrent runner may have won these rows.
            taken = QueueEntry.objects.filter(_due(now), pk__in=ids).update(
                claim=token, claimed_until=until)
            if taken:
                claims.append((token, ids))
                if on_claimed is not None:
                    transaction.on_commit(lambda t=token, i=ids: on_claimed(t, i))
    return claims


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff from MAILHOST_QUEUE_RETRY_MIN up to _MAX
    (RFC 5321 §4.5.4.1: at least 30 minutes apart in steady state)."""
    seconds = settings.MAILHOST_QUEUE_RETRY_MIN * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.MAILHOST_QUEUE_RETRY_MAX))


# The TLS report's counts of one attempt (tlsrpt.count_session calls), made in
# the transaction that records the attempt's outcome: no commit of their own.
TlsCounts = list[Callable[[], None]]


# How a group of messages is to be sent (RFC 8689): as the recipient domain's
# policy says, over validated TLS only (REQUIRETLS), or with no policy
# applied ("TLS-Required: No").
AS_POLICY, TLS_REQUIRED, TLS_OPTIONAL = "policy", "required", "optional"


def _hops(
    domain: str, tls_counts: TlsCounts, tls: str = AS_POLICY,
) -> tuple[list[Hop], int, dict[str, Any], Policy | None, bool]:
    """Where to deliver mail for ``domain``: the transport map's hop, or its MX
    hosts as its MTA-STS policy allows (RFC 8461 §5; the map's hops are ours to
    choose and take no policy, as Postfix's transport(5) nexthops). The last
    value says whether the sessions count in the domain's TLS report: not
    through the map's hops, which are not the domain's."""
    routes = parse_transports(settings.MAILHOST_TRANSPORTS,
                              default_port=settings.MAILHOST_DELIVERY_PORT)
    route = route_for(routes, domain)
    if route is not None:
        auth: dict[str, Any] = {"tls": route.tls, "username": route.username,
                                "password": route.password}
        if tls == TLS_REQUIRED:
            # RFC 8689 §4.2.1: a host not found through MX needs no MX
            # validation; its certificate and REQUIRETLS are still checked.
            auth.update(verify_context=mtasts.tls_context(), require_tls=True)
        return [Hop(route.host, route.host)], route.port, auth, None, False
    hops = asyncio.run(resolve_hops(domain))
    if tls == TLS_OPTIONAL:
        # RFC 8689 §4.2.2: STARTTLS where offered, no recipient policy enforced.
        return hops, settings.MAILHOST_DELIVERY_PORT, {}, None, False
    lookup = mtasts.lookup_policy(domain)
    policy = lookup.policy
    if tls == TLS_REQUIRED:
        return _validated_hops(domain, hops, policy)
    if lookup.failure:
        tls_counts.append(partial(tlsrpt.count_session,
                                  tlsrpt.Session(domain, "", lookup.failure), None, sts=True))
    if policy is None or policy.mode == "none":
        return hops, settings.MAILHOST_DELIVERY_PORT, {}, None, True
    unlisted = [hop.host for hop in hops if not policy.allows(hop.host)]
    if policy.mode == "testing":
        for host in dict.fromkeys(unlisted):
            log.warning("MTA-STS testing: %s is not an mx of the policy of %s (delivered "
                        "all the same)", host, domain)
        # Checked as under enforce, for the TLS report; _connect does not enforce.
        options = {"verify_context": mtasts.tls_context()}
        return hops, settings.MAILHOST_DELIVERY_PORT, options, policy, True
    # Enforce: only the MX hosts the policy lists, each over verified TLS.
    listed = [hop for hop in hops if policy.allows(hop.host)]
    if not listed:
        for host in dict.fromkeys(unlisted):
            tls_counts.append(partial(
                tlsrpt.count_session,
                tlsrpt.Session(domain, host, tlsrpt.VALIDATION_FAILURE), policy))
        raise DestinationError(
            f"451 4.7.0 No MX host of {domain} ({', '.join(dict.fromkeys(unlisted))}) is "
            f"listed in its MTA-STS policy (mx: {', '.join(policy.mx)})", permanent=False)
    options = {"verify_context": mtasts.tls_context()}
    return listed, settings.MAILHOST_DELIVERY_PORT, options, policy, True


def _validated_hops(
    domain: str, hops: list[Hop], policy: Policy | None,
) -> tuple[list[Hop], int, dict[str, Any], Policy | None, bool]:
    """RFC 8689 §4.2.1 step 2: without DNSSEC (which Mailhost's resolver does
    not validate), the MX host names must be validated by the domain's
    MTA-STS policy (RFC 8461 §4.1): only the MX hosts it lists, whatever its
    mode, each over TLS with a certificate valid for its name (step 4)."""
    listed = [hop for hop in hops
              if policy is not None and policy.mode != "none" and policy.allows(hop.host)]
    if not listed:
        raise DestinationError(
            f"550 5.7.10 Encryption needed: the message requires TLS (REQUIRETLS) and no "
            f"MX host of {domain} is validated by an MTA-STS policy", permanent=True)
    options = {"verify_context": mtasts.tls_context(), "require_tls": True}
    return listed, settings.MAILHOST_DELIVERY_PORT, options, policy, True


def _connect(
    domain: str, hop: Hop, port: int, options: dict[str, Any], policy: Policy | None,
    tls_reported: bool, tls_counts: TlsCounts,
) -> DeliverySession | str:
    """A session to ``hop`` with its TLS outcome counted for the TLS report,
    or the reply saying why there is none. RFC 8461 §5: under a policy in
    testing mode the certificate is checked as under enforce, but a failure
    is only counted (and logged): the host is tried again without the check."""
    def open_session(**tls: Any) -> DeliverySession:
        return DeliverySession(hop.host, hop.address, port, helo=settings.MAILHOST_HOSTNAME,
                               timeout=settings.MAILHOST_DELIVERY_TIMEOUT, **tls)

    def count(result: str, sending_ip: str = "") -> None:
        if tls_reported and result:
            if policy is not None and not policy.allows(hop.host):
                result = tlsrpt.VALIDATION_FAILURE  # an MX a testing policy does not list
            tls_counts.append(partial(tlsrpt.count_session, tlsrpt.Session(
                domain, hop.host, result, hop.address, sending_ip), policy))

    try:
        session = open_session(**options)
    except ConnectionFailed as error:
        log.info("host failed domain=%s host=%s reply=%s", domain, hop.host, error.reply)
        count(error.tls_result)
        # Never downgraded for a REQUIRETLS message (RFC 8689 §4.2.1).
        if not (error.tls_result and policy is not None and policy.mode == "testing"
                and not options.get("require_tls")):
            return error.reply
        log.warning("MTA-STS testing: %s of %s failed TLS (%s); delivering all the same",
                    hop.host, domain, error.tls_result)
        try:
            return open_session()
        except ConnectionFailed as second:
            log.info("host failed domain=%s host=%s reply=%s", domain, hop.host, second.reply)
            return second.reply
    count(session.tls_result, session.local_address)
    return session


def _send(
    domain: str, messages: list[OutgoingMessage], session: DeliverySession | None,
    tls_counts: TlsCounts,
) -> tuple[DeliverySession | None, str, bool]:
    """Deliver over ``session`` if it is still open, else over the first host
    that takes the connection and the first message; fills in each recipient's
    reply. Returns (the session to reuse or None, remote host, DSN passed on)."""
    # RFC 8689: a REQUIRETLS message (not a report: §4.2.1 is for a non-empty
    # reverse path) and a "TLS-Required: No" one go over connections of their own.
    required = [m for m in messages if m.require_tls and m.sender]
    optional = [m for m in messages if m.tls_optional and not m.require_tls]
    special = [(TLS_REQUIRED, required), (TLS_OPTIONAL, optional)]
    apart = {id(m) for m in required + optional}
    messages = [m for m in messages if id(m) not in apart]
    outcome: tuple[DeliverySession | None, str, bool] = (session, "", False)
    for tls, group in special:
        if group:
            once, host, dsn_passed_on = _send_afresh(domain, group, tls_counts, tls)
            if once is not None:
                once.close()
            outcome = (session, host, dsn_passed_on)
    if not messages:
        return outcome
    if session is not None:
        done = session.send(messages)
        if done or not session.broken:
            return (None if session.broken else session), session.host, session.dsn_passed_on
        # The reused connection had gone (an idle timeout): start afresh.
    return _send_afresh(domain, messages, tls_counts, AS_POLICY)


def _send_afresh(
    domain: str, messages: list[OutgoingMessage], tls_counts: TlsCounts, tls: str,
) -> tuple[DeliverySession | None, str, bool]:
    """``_send`` over a new connection to the first host that takes it."""
    def fail_all(reply: str) -> None:
        for message in messages:
            for recipient in message.recipients:
                recipient.reply = reply

    try:
        hops, port, options, policy, tls_reported = _hops(domain, tls_counts, tls)
    except DestinationError as error:
        fail_all(error.reply)
        return None, "", False
    last = f"451 4.4.1 No host for {domain} answered"
    temporary = ""
    for hop in hops:
        connected = _connect(domain, hop, port, options, policy, tls_reported, tls_counts)
        if isinstance(connected, str):
            last = connected
            temporary = connected if connected[:1] == "4" else temporary
            continue
        session = connected
        if policy is not None and policy.mode == "testing" and not session.encrypted:
            log.warning("MTA-STS testing: %s of %s took mail without STARTTLS", hop.host,
                        domain)
        done = session.send(messages)
        if session.broken and not done:  # nothing went through: the next host
            last = messages[0].recipients[0].reply
            log.info("host failed domain=%s host=%s reply=%s", domain, hop.host, last)
            continue
        return (None if session.broken else session), session.host, session.dsn_passed_on
    # RFC 8689 §4.2.1: a REQUIRETLS message fails for good (5.7.10, 5.7.30)
    # once every host was tried and refused it, not while one was unreachable.
    fail_all(temporary if tls == TLS_REQUIRED and temporary else last)
    return None, hops[-1].host if hops else "", False


def attempt(
    claim: str, entry_ids: Sequence[int], *, now: datetime | None = None,
    follow_up_seconds: float = 0,
) -> None:
    """One delivery attempt for the entries of one claim (one destination):
    one connection for all of them, then the outcome recorded per recipient.
    Idempotent: entries no longer held by this claim are left alone. With
    ``follow_up_seconds``, the connection stays open for the entries bound to
    the same destination that are due meanwhile, claimed in turn, for up to
    that long."""
    deadline = time.monotonic() + follow_up_seconds
    session: DeliverySession | None = None
    try:
        while True:
            domain, session = _attempt_claim(claim, entry_ids, now=now, session=session)
            if domain is None or time.monotonic() >= deadline:
                return
            following = _claim_next(domain, now=now, deadline=deadline)
            if following is None:
                return
            claim, entry_ids = following
    finally:
        if session is not None:
            session.close()


# How long a delivery task with its connection open waits for more mail to the
# destination to fall due (mail accepted right now is committed in batches),
# and how often it looks meanwhile: a read, so it holds no lock. While mail
# arrives, a claim is not taken with the first due entry but once a claim's
# worth is due or after a moment: each claim and each record of its outcome is
# a transaction, and one per message or two is what held the workers back
# when mail was flowing in.
_FOLLOW_UP_IDLE = 0.5
_FOLLOW_UP_POLL = 0.05
_FOLLOW_UP_GATHER = 0.1


def _claim_next(
    domain: str, *, now: datetime | None, deadline: float,
) -> tuple[str, list[int]] | None:
    """The next claim of due entries for ``domain``, waiting a moment for
    some to fall due; None at once when the due ones are all claimed already:
    their tasks wait in the broker, and this worker is the one they wait for."""
    size = settings.MAILHOST_QUEUE_CLAIM_SIZE
    idle_until = min(deadline, time.monotonic() + _FOLLOW_UP_IDLE)
    gather_until: float | None = None
    while True:
        moment = now or timezone.now()
        due = QueueEntry.objects.filter(_due(moment), domain=domain)[:size].count()
        if due:
            gather_until = gather_until or min(deadline, time.monotonic() + _FOLLOW_UP_GATHER)
            if due < size and time.monotonic() < gather_until:
                time.sleep(_FOLLOW_UP_POLL)
                continue
            claims = claim_due(now=now, domain=domain, limit=size)
            if claims:
                return claims[0]
        if QueueEntry.objects.filter(domain=domain, next_attempt__lte=moment,
                                     claimed_until__gte=moment).exists():
            return None
        if time.monotonic() >= idle_until:
            return None
        time.sleep(_FOLLOW_UP_POLL)


def _attempt_claim(
    claim: str, entry_ids: Sequence[int], *, now: datetime | None,
    session: DeliverySession | None,
) -> tuple[str | None, DeliverySession | None]:
    entries = list(QueueEntry.objects.select_related("message")
                   .filter(pk__in=list(entry_ids), claim=claim).order_by("pk"))
    if not entries:
        return None, session
    domain = entries[0].domain
    blobs = get_blob_store()
    outgoing: dict[int, OutgoingMessage] = {}
    by_recipient: dict[int, OutgoingRecipient] = {}
    for entry in entries:
        message = entry.message
        if message.pk not in outgoing:
            data = blobs.read(message.blob_id)
            outgoing[message.pk] = OutgoingMessage(
                sender=message.sender, data=data, recipients=[],
                ret=message.ret, envid=message.envid, require_tls=message.require_tls,
                tls_optional=tls_not_required(data), binarymime=message.binarymime)
        recipient = OutgoingRecipient(entry.recipient, entry.notify, entry.orcpt)
        outgoing[message.pk].recipients.append(recipient)
        by_recipient[entry.pk] = recipient
    tls_counts: TlsCounts = []
    session, host, dsn_passed_on = _send(domain, list(outgoing.values()), session, tls_counts)
    with transaction.atomic():
        record(claim, {e.pk: by_recipient[e.pk].reply for e in entries}, host=host,
               dsn_passed_on=dsn_passed_on, now=now)
        for count in tls_counts:
            count()
    return domain, session


def record(
    claim: str, replies: dict[int, str], *, host: str, dsn_passed_on: bool,
    now: datetime | None = None,
) -> None:
    """Record one attempt's replies (entry pk -> SMTP reply): 2xx delivered,
    5xx bounced, 4xx retried until the message's lifetime is over."""
    now = now or timezone.now()
    with transaction.atomic():
        entries = list(QueueEntry.objects.select_for_update().select_related("message")
                       .filter(pk__in=list(replies), claim=claim).order_by("pk"))
        reports: dict[tuple[int, str], list[RecipientReport]] = defaultdict(list)
        finished: list[int] = []
        outcomes: list[TraceEvent] = []
        latencies: list[tuple[str, float]] = []
        for entry in entries:
            reply = replies[entry.pk] or "451 4.4.1 No answer"
            code = int(reply[:3]) if reply[:3].isdigit() else 451
            message = entry.message
            outcome = trace.event(
                TraceKind.SENT, message.queue_id, addresses=[message.sender, entry.recipient],
                recipient=entry.recipient, host=host, reply=reply, attempt=entry.attempts + 1)
            outcomes.append(outcome)
            if code < 300:
                finished.append(entry.pk)
                latencies.append(("first" if entry.attempts == 0 else "retry",
                                  (now - message.arrival).total_seconds()))
                log.info("delivered id=%s to=<%s> host=%s reply=%s", message.queue_id,
                         entry.recipient, host, reply)
                # RFC 3461 §5.2.2: "relayed" when the next hop took no DSN duty.
                if entry.notify_on("SUCCESS") and not dsn_passed_on:
                    reports[(message.pk, "relayed")].append(_report(
                        entry, "relayed", "2.0.0", reply, host, now))
                continue
            entry.attempts += 1
            entry.last_reply, entry.last_host = reply, host
            if code >= 500 or now >= message.expires:
                finished.append(entry.pk)
                outcome.kind = TraceKind.BOUNCED
                # RFC 3463 X.4.7: delivery time expired, a permanent failure.
                status = status_of(reply, permanent=True) if code >= 500 else "5.4.7"
                log.info("bounced id=%s to=<%s> reply=%s", message.queue_id,
                         entry.recipient, reply)
                if entry.notify_on("FAILURE"):
                    reports[(message.pk, "failed")].append(_report(
                        entry, "failed", status, reply, host, now))
                continue
            entry.next_attempt = min(now + retry_delay(entry.attempts), message.expires)
            entry.claim, entry.claimed_until = "", None
            outcome.kind = TraceKind.DEFERRED
            outcome.detail["next_attempt"] = f"{entry.next_attempt:%Y-%m-%d %H:%M:%S} UTC"
            log.info("deferred id=%s to=<%s> attempts=%d next=%s reply=%s", message.queue_id,
                     entry.recipient, entry.attempts, entry.next_attempt.isoformat(), reply)
            notice_due = now - message.arrival >= timedelta(
                seconds=settings.MAILHOST_QUEUE_DELAY_NOTICE)
            if notice_due and not entry.delay_notified:
                entry.delay_notified = True
                if entry.notify_on("DELAY"):
                    reports[(message.pk, "delayed")].append(_report(
                        entry, "delayed", status_of(reply, permanent=False), reply, host, now,
                        retry_until=message.expires))
            entry.save(update_fields=["attempts", "last_reply", "last_host", "next_attempt",
                                      "claim", "claimed_until", "delay_notified"])
        trace.record(outcomes)
        if latencies:
            transaction.on_commit(partial(
                metrics.observe, metrics.REMOTE_DELIVERY_LATENCY, latencies))
        messages = {e.message.pk: e.message for e in entries}
        for (message_pk, _), message_reports in reports.items():
            notify_sender(messages[message_pk], message_reports, now=now)
        QueueEntry.objects.filter(pk__in=finished).delete()
        OutboundMessage.objects.filter(pk__in=list(messages), entries__isnull=True).delete()


def _report(
    entry: QueueEntry, action: str, status: str, reply: str, host: str, now: datetime, *,
    retry_until: datetime | None = None,
) -> RecipientReport:
    return RecipientReport(
        recipient=entry.recipient, action=action, status=status, orcpt=entry.orcpt,
        remote_mta=host, diagnostic=reply, last_attempt=now, will_retry_until=retry_until)


def notify_sender(
    message: OutboundMessage, reports: Sequence[RecipientReport], *, now: datetime,
) -> None:
    """Send a delivery status notification to the envelope sender: never to
    the null sender (RFC 5321 §4.5.5), so a report is never reported on."""
    notice = trace.event(TraceKind.DSN, message.queue_id, addresses=[message.sender],
                         action=reports[0].action, to=message.sender,
                         recipients=[r.recipient for r in reports])
    if not message.sender:
        log.info("no report id=%s: null sender", message.queue_id)
        notice.detail["dropped"] = "the sender is the null sender <>"
        trace.record([notice])
        return
    original = get_blob_store().read(message.blob_id)
    # RFC 8689 §5: the report on a REQUIRETLS message carries its header only
    # (as RET=HDRS, whatever RET said) and asks for REQUIRETLS itself. A binary
    # body (RFC 3030 §3) is not returned either: a report is no binary MIME.
    headers_only = message.require_tls or message.binarymime
    report = build_dsn(
        reporting_mta=settings.MAILHOST_HOSTNAME, recipient=message.sender, original=original,
        reports=reports, ret="HDRS" if headers_only else message.ret,
        envid=message.envid, arrival=message.arrival, now=now)
    try:
        submit(sender="", recipients=[RecipientSpec(message.sender)], data=report,
               require_tls=message.require_tls)
    except MailhostError as error:  # the sender's own mailbox is gone, full, disabled
        log.warning("report for id=%s to <%s> dropped: %s", message.queue_id, message.sender,
                    error)
        notice.detail["dropped"] = str(error)
    trace.record([notice])


# --- administration (manage.py mailqueue, the admin panel) -------------------------


def sent_from(domains: Sequence[str], field: str = "sender") -> Q:
    """Rows whose envelope sender (``field``) is in one of ``domains``."""
    query = Q(pk__in=[])
    for name in domains:
        query |= Q(**{f"{field}__iendswith": f"@{name}"})
    return query


@dataclass(frozen=True)
class QueueSummary:
    messages: int
    recipients: int
    deferred: int  # recipients tried at least once
    oldest: datetime | None  # arrival of the oldest queued message


def queue_summary(*, sender_domains: Sequence[str] | None = None) -> QueueSummary:
    """The queue's size and age in one query; ``sender_domains`` (None: all)
    counts only mail sent from those domains."""
    entries = QueueEntry.objects.all()
    if sender_domains is not None:
        entries = entries.filter(sent_from(sender_domains, "message__sender"))
    return QueueSummary(**entries.aggregate(
        messages=Count("message", distinct=True), recipients=Count("pk"),
        deferred=Count("pk", filter=Q(attempts__gt=0)), oldest=Min("message__arrival")))



def stored_headers(message: OutboundMessage) -> str:
    """The header section of a queued message, as it will be sent."""
    return headers_of(get_blob_store().read(message.blob_id)).decode("utf-8", "replace")


def retry_now(queue_id: str) -> int:
    """Make every entry of a queued message due now (and free any claim)."""
    return QueueEntry.objects.filter(message__queue_id=queue_id).update(
        next_attempt=timezone.now(), claim="", claimed_until=None)


def delete_queued(queue_id: str) -> bool:
    """Remove a queued message without a report, as ``postsuper -d`` does."""
    with transaction.atomic():
        recipients = list(QueueEntry.objects.filter(message__queue_id=queue_id)
                          .values_list("recipient", flat=True))
        deleted, _ = OutboundMessage.objects.filter(queue_id=queue_id).delete()
        if deleted:
            trace.record([trace.event(TraceKind.DELETED, queue_id, addresses=recipients,
                                      recipients=recipients)])
    return bool(deleted)


# RFC 3463 X.4.7: as for a message whose time in the queue is over.
BOUNCED_BY_ADMINISTRATOR = "554 5.4.7 Delivery given up by the postmaster"


def bounce_now(queue_id: str, *, now: datetime | None = None) -> int:
    """Give up on a queued message now: each recipient still waiting bounces
    and the sender gets the report an expired message gets (``record``'s own
    path, a 5xx reply). Returns the number of recipients bounced; entries a worker is
    delivering at this moment are left to it."""
    now = now or timezone.now()
    claim = secrets.token_hex(16)
    with transaction.atomic():
        free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        replies = dict(QueueEntry.objects.filter(free, message__queue_id=queue_id)
                       .values_list("pk", "last_reply"))
        QueueEntry.objects.filter(pk__in=list(replies)).update(
            claim=claim, claimed_until=now + timedelta(seconds=60))
        record(claim, dict.fromkeys(replies, BOUNCED_BY_ADMINISTRATOR), host="",
               dsn_passed_on=False, now=now)
    return len(replies)
