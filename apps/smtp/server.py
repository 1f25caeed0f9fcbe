"""The SMTP server: aiosmtpd's state machine, with what a mail host needs on top.

``MailhostSMTP`` (connection state) advertises PIPELINING and
ENHANCEDSTATUSCODES, puts an enhanced code on every reply, logs one line per
connection, and can be asked to leave at shutdown. ``InboundHandler``
(transaction rules for the MX) resolves recipients through the directory and
stores the message through the store's group committer before it answers 250.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import ssl
import weakref
from dataclasses import dataclass
from typing import Any

import aiosmtpd.smtp as aiosmtpd_smtp
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.utils import timezone

from apps.antispam import inbound as antispam
from apps.antispam import services as spool
from apps.delivery import srs
from apps.delivery.filing import Filing, deliver_filed, send_replies
from apps.delivery.linelength import limit_line_length
from apps.delivery.services import RecipientSpec, aenqueue, new_queue_id
from apps.directory.services import Resolution
from apps.smtp import replies
from apps.smtp.received import protocol_name, received_header
from apps.store import services as store
from apps.store import trace
from apps.store.batching import committer
from apps.store.models import TraceEvent, TraceKind
from apps.store.services import DeliveryRequest
from mailhost import metrics
from mailhost.asyncdb import database_sync_to_async
from mailhost.errors import Disabled, Invalid, MailhostError, NotFound, OverQuota

log = logging.getLogger("mailhost.smtp")



def has_bare_lf(data: bytes) -> bool:
    """Whether a line of ``data`` ends in LF without CR (RFC 5321 §2.3.8).
    Counted rather than matched: a look-behind regex steps through every
    byte of the message in Python's regex engine, a tenth of the listener's
    CPU per 10 KiB message; ``bytes.count`` runs at memory speed."""
    return data.count(b"\n") != data.count(b"\r\n")


class _IntrospectionOncePerClass:
    """aiosmtpd's SMTP.__init__ finds the AUTH mechanisms with
    ``inspect.getmembers`` of the protocol and the handler, and reads the EHLO
    hook's signature, on every connection: about 1 ms of CPU per connection,
    most of a short session's. This stand-in for the ``inspect`` module that
    aiosmtpd.smtp sees answers those from what it found for the class the
    first time; aiosmtpd keeps only the ``auth_*`` members, so only those are
    returned. Anything else goes to the real module."""

    def __init__(self) -> None:
        self._auth_names: dict[type, list[str]] = {}
        self._signatures: dict[Any, inspect.Signature] = {}

    def getmembers(self, obj: object) -> list[tuple[str, Any]]:
        names = self._auth_names.get(type(obj))
        if names is None:
            names = self._auth_names[type(obj)] = [
                name for name, _ in inspect.getmembers(type(obj))
                if name.startswith("auth_")]
        return [(name, getattr(obj, name)) for name in names]

    def signature(self, function: Any) -> inspect.Signature:
        # A bound method's signature (without self), per underlying function.
        key = (getattr(function, "__func__", function), hasattr(function, "__self__"))
        found = self._signatures.get(key)
        if found is None:
            found = self._signatures[key] = inspect.signature(function)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


aiosmtpd_smtp.inspect = _IntrospectionOncePerClass()  # type: ignore[assignment]


class MailhostSMTP(SMTP):
    """One SMTP connection."""

    def __init__(self, handler: Any, *, listener: str, **kwargs: Any) -> None:
        kwargs.setdefault("hostname", settings.MAILHOST_HOSTNAME)
        kwargs.setdefault("ident", "Mailhost ESMTP")
        kwargs.setdefault("data_size_limit", settings.MAILHOST_MAX_MESSAGE_SIZE)
        kwargs.setdefault("enable_SMTPUTF8", True)
        kwargs.setdefault("decode_data", False)
        kwargs.setdefault("timeout", settings.MAILHOST_SMTP_TIMEOUT)
        # RFC 5321 §4.5.3.1.6 sets 1000 octets, but real mail (HTML, long
        # headers) goes past it and every peer accepts it: refusing would lose
        # legitimate mail. Read before super().__init__ builds the stream reader.
        self.line_length_limit = settings.MAILHOST_SMTP_MAX_LINE_LENGTH
        super().__init__(handler, **kwargs)
        self.listener = listener
        self._replies_by_digit = metrics.smtp_reply_counter(listener)
        self._greeting_sent = False
        self._answering_helo = False
        self.in_transaction = False

    # --- connection ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = self.session.peer
            # DEBUG: at INFO, one line per message ("delivered") is enough.
            log.debug("connect listener=%s peer=%s", self.listener, peer)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is not None:
            log.debug("disconnect listener=%s peer=%s", self.listener, self.session.peer)
        super().connection_lost(error)

    def request_shutdown(self) -> None:
        """Graceful stop: an idle session is told 421 and closed; a session in
        the middle of a transaction is left to finish it."""
        if self.in_transaction or self.transport is None:
            return
        self._writer.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
        self.transport.close()

    def _timeout_cb(self) -> None:
        """Idle for MAILHOST_SMTP_TIMEOUT (RFC 5321 §4.5.3.2.7): say why before closing."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(replies.IDLE_TIMEOUT.encode() + b"\r\n")
        super()._timeout_cb()

    # --- replies ---
    async def push(self, status: str | bytes) -> None:
        # "replace": aiosmtpd echoes some arguments ("502 Could not VRFY x"), which
        # keep bytes that were not UTF-8 as surrogates.
        line = status.encode("utf-8", "replace") if isinstance(status, str) else status
        if not self._greeting_sent:
            self._greeting_sent = True  # RFC 2034 §3: the greeting has no enhanced code
        elif not self._answering_helo:
            line = replies.with_enhanced_code(line)
        if line[3:4] != b"-":  # the last line of a reply
            counter = self._replies_by_digit.get(line[:1])
            if counter is not None:
                counter.inc()
        await super().push(line)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not _is_utf8(hostname):
            await self.push(replies.BAD_HELO_SYNTAX)
            return
        self._answering_helo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._answering_helo = False

    async def smtp_HELO(self, hostname: str) -> None:
        if not _is_utf8(hostname):
            await self.push(replies.BAD_HELO_SYNTAX)
            return
        self._answering_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._answering_helo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT/VRFY address parser with holes closed, all
        answered as aiosmtpd answers any malformed address (553 5.1.3 for MAIL
        and RCPT, RFC 5321 §4.2.2): an argument that is not UTF-8 (RFC 6531
        §3.3; aiosmtpd keeps such bytes as surrogates that no later step can
        store), and the addresses on which the email package's parser raises
        something else than HeaderParseError: IndexError for "<" with nothing
        after it, AttributeError for an unclosed domain literal ("<a@[b>")."""
        if not _is_utf8(arg):
            return None, None
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError):
            return None, None

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self.in_transaction = False


def _is_utf8(argument: str | None) -> bool:
    """aiosmtpd decodes command arguments as UTF-8 with surrogateescape: a
    surrogate is a byte that was not UTF-8."""
    try:
        (argument or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ehlo_responses(
    session: Session, hostname: str, responses: list[str], *extensions: str,
) -> list[str]:
    session.host_name = hostname
    # aiosmtpd does not advertise these although it honours them.
    return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", *extensions,
            responses[-1]]


def start_transaction(
    server: MailhostSMTP, envelope: Envelope, address: str, mail_options: list[str],
) -> None:
    """MAIL FROM accepted: the envelope of a new transaction (aiosmtpd's own
    fields plus our queue id and per-recipient resolutions)."""
    envelope.mail_from = address
    envelope.mail_options.extend(mail_options)
    envelope.queue_id = new_queue_id()  # type: ignore[attr-defined]
    envelope.resolutions = {}  # type: ignore[attr-defined]
    server.in_transaction = True


@dataclass(frozen=True)
class Client:
    """Who is sending, as the per-recipient checks need it."""

    ip: str
    mail_from: str
    authenticated: bool


@database_sync_to_async
def check_recipient(address: str, declared_size: int, client: Client) -> Resolution | str:
    """The directory's resolution of a RCPT address, or the reply refusing it:
    unknown, not ours to relay, over quota for a message of ``declared_size``,
    greylisted. Every check in one trip to a worker thread."""
    try:
        resolution = srs.resolve_recipient(address)
    except Invalid:
        return replies.BAD_ADDRESS
    except NotFound:
        return replies.UNKNOWN_USER
    except (Disabled, srs.InvalidSrsAddress) as error:
        return error.smtp_reply()
    if not resolution.hosted:
        return replies.RELAY_DENIED
    if store.mailboxes_over_quota(resolution.mailboxes, declared_size):
        return OverQuota(f"Mailbox over quota: {address}").smtp_reply()
    # --- antispam: greylisting ---
    if settings.MAILHOST_ANTISPAM:
        refusal = antispam.recipient_refusal(
            client.ip, client.mail_from, address, authenticated=client.authenticated,
            known_domains=[mailbox.domain for mailbox in resolution.mailboxes])
        if refusal:
            return refusal
    # --- end antispam ---
    return resolution


class InboundHandler:
    """Transaction rules for mail arriving from other servers (the MX)."""

    async def handle_EHLO(
        self, server: MailhostSMTP, session: Session, envelope: Envelope,
        hostname: str, responses: list[str],
    ) -> list[str]:
        # --- antispam: connection rate (counted at the first greeting) ---
        refusal = await _connection_refusal(server, session)
        if refusal:
            session.host_name = hostname
            return [refusal]
        # --- end antispam ---
        return ehlo_responses(session, hostname, responses)

    async def handle_HELO(
        self, server: MailhostSMTP, session: Session, envelope: Envelope, hostname: str,
    ) -> str:
        session.host_name = hostname
        # --- antispam: connection rate (counted at the first greeting) ---
        refusal = await _connection_refusal(server, session)
        if refusal:
            return refusal
        # --- end antispam ---
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: MailhostSMTP, session: Session, envelope: Envelope,
        address: str, mail_options: list[str],
    ) -> str:
        # --- antispam: message rate, DNS blocklists, SPF ---
        envelope.spf = None  # type: ignore[attr-defined]
        if settings.MAILHOST_ANTISPAM:
            first = not getattr(session, "sender_checked", False)
            session.sender_checked = True  # type: ignore[attr-defined]
            refusal, envelope.spf = await antispam.sender_refusal(  # type: ignore[attr-defined]
                _peer_ip(session), session.host_name or "", address,
                first_in_session=first, authenticated=bool(session.authenticated))
            if refusal:
                return refusal
        # --- end antispam ---
        start_transaction(server, envelope, address, mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: MailhostSMTP, session: Session, envelope: Envelope,
        address: str, rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= settings.MAILHOST_SMTP_MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        checked = await check_recipient(
            address, _declared_size(envelope.mail_options),
            Client(_peer_ip(session), envelope.mail_from or "", bool(session.authenticated)))
        if isinstance(checked, str):
            return checked
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.resolutions[address] = checked  # type: ignore[attr-defined]
        return replies.RECIPIENT_OK

    async def handle_DATA(
        self, server: MailhostSMTP, session: Session, envelope: Envelope,
    ) -> str:
        content: bytes = envelope.original_content or b""
        queue_id: str = envelope.queue_id  # type: ignore[attr-defined]
        peer_ip = _peer_ip(session)
        if has_bare_lf(content):
            log.warning("reject id=%s peer=%s reason=bare-lf", queue_id, peer_ip)
            return replies.BARE_LF
        header = received_header(
            helo=session.host_name, peer_ip=peer_ip, by_host=server.hostname,
            protocol=protocol_name(esmtp=session.extended_smtp, tls=session.ssl is not None,
                                   authenticated=bool(session.authenticated)),
            queue_id=queue_id, recipients=envelope.rcpt_tos, when=timezone.now(),
        )
        mailbox_ids = list(dict.fromkeys(
            mailbox.pk
            for resolution in envelope.resolutions.values()  # type: ignore[attr-defined]
            for mailbox in resolution.mailboxes
        ))
        request = DeliveryRequest(mailbox_ids, header + content, queue_id=queue_id)
        # The acceptance joins the message trace with the first durable step.
        acceptance = trace.accepted(
            TraceKind.RECEIVED, queue_id=queue_id, listener=server.listener, peer_ip=peer_ip,
            helo=session.host_name or "", tls=session.ssl is not None,
            user=_login(session), sender=envelope.mail_from or "",
            recipients=envelope.rcpt_tos, data=request.data)
        try:
            if not mailbox_ids:
                pass  # only forwarded: nothing to file here
            elif settings.MAILHOST_ANTISPAM:
                await _spool(session, envelope, request, acceptance)
            else:
                request.trace_events.append(acceptance)
                plans = await committer(deliver_filed).submit(
                    Filing(request, envelope.mail_from or ""))
                if plans:
                    await database_sync_to_async(send_replies)(plans)
            await _queue_forwards(envelope, request.data, queue_id,
                                  [] if mailbox_ids else [acceptance])
        except MailhostError as error:
            log.info("defer id=%s from=<%s> reason=%s", queue_id, envelope.mail_from, error.code)
            return error.smtp_reply()
        except Exception:
            log.exception("delivery failed id=%s", queue_id)
            return replies.TEMPORARY_FAILURE
        log.info(
            "delivered id=%s from=<%s> to=%s size=%d peer=%s",
            queue_id, envelope.mail_from, ",".join(f"<{r}>" for r in envelope.rcpt_tos),
            len(request.data), peer_ip,
        )
        return f"250 2.0.0 OK id={queue_id}"


async def _queue_forwards(
    envelope: Envelope, data: bytes, queue_id: str, trace_events: list[TraceEvent],
) -> None:
    """Aliases that point outside: the same message goes to the outbound queue,
    its envelope sender rewritten by SRS (so that it passes SPF at the
    destination and bounces come back to us for the original sender), its body
    lines short enough for the next server (``limit_line_length``)."""
    forwarders = [resolution for resolution in envelope.resolutions.values()  # type: ignore[attr-defined]
                  if resolution.external]
    forwards = list(dict.fromkeys(
        address for resolution in forwarders for address in resolution.external))
    if forwards:
        sender = await database_sync_to_async(srs.forwarding_sender)(
            envelope.mail_from or "", forwarders[0].address)
        await aenqueue(sender=sender, data=limit_line_length(data),
                       queue_id=queue_id,
                       recipients=[RecipientSpec(address) for address in forwards],
                       trace_events=trace_events)


def _login(session: Session) -> str:
    """The authenticated user's address, for the message trace."""
    mailbox = session.auth_data if session.authenticated else None
    return getattr(mailbox, "address", "")


def _peer_ip(session: Session) -> str:
    return session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)


# --- antispam -----------------------------------------------------------------------


async def _connection_refusal(server: MailhostSMTP, session: Session) -> str | None:
    if not settings.MAILHOST_ANTISPAM or getattr(session, "connection_counted", False):
        return None
    session.connection_counted = True  # type: ignore[attr-defined]
    if not antispam.counts_connections(_peer_ip(session)):
        return None  # exempt: no trip to a thread and the cache for nothing
    refusal = await antispam.connection_refusal(_peer_ip(session))
    if refusal and server.transport is not None:
        # RFC 5321 §3.8: a 421 is followed by closing the connection; the
        # reply is written before the close takes effect.
        asyncio.get_running_loop().call_soon(server.transport.close)
    return refusal


async def _spool(
    session: Session, envelope: Envelope, request: DeliveryRequest, acceptance: TraceEvent,
) -> None:
    """Durable in the spool before the 250; filed by the check task (or now,
    before answering, with MAILHOST_ANTISPAM_INLINE)."""
    facts = spool.SmtpFacts(
        client_ip=_peer_ip(session), helo=session.host_name or "",
        mail_from=envelope.mail_from or "",
        spf=envelope.spf,  # type: ignore[attr-defined]
        authenticated=bool(session.authenticated), queue_id=request.queue_id)
    pk = await committer(spool.spool_batch).submit(spool.SpoolRequest(
        request.data, list(request.mailbox_ids), facts, trace_events=[acceptance]))
    if settings.MAILHOST_ANTISPAM_INLINE:
        await database_sync_to_async(spool.file_spooled)(pk)
    else:
        _file_if_overdue_later(pk)


_overdue_checks: set[asyncio.Task[None]] = set()
# Per loop: when (whole seconds of loop time) -> the spool rows to look at then.
_overdue: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, list[int]]] = (
    weakref.WeakKeyDictionary())


def _file_if_overdue_later(pk: int) -> None:
    """When the checks' time is up and no worker has filed the message, file it
    unchecked from here: a stopped worker must not hold mail. (After a listener
    restart, the beat task sweep_spool does the same.) The messages spooled
    within a second are looked at together, in one query."""
    loop = asyncio.get_running_loop()
    due = math.ceil(loop.time()) + settings.MAILHOST_ANTISPAM_TIMEOUT + 1
    buckets = _overdue.setdefault(loop, {})
    if due not in buckets:
        buckets[due] = []
        loop.call_at(due, _start_overdue_check, loop, due)
    buckets[due].append(pk)


def _start_overdue_check(loop: asyncio.AbstractEventLoop, due: int) -> None:
    pks = _overdue[loop].pop(due)

    async def check() -> None:
        try:
            held = await database_sync_to_async(spool.file_overdue)(pks)
        except Exception:
            log.exception("filing overdue spool=%s failed", pks)
            held = pks
        for pk in held:  # a worker holds it: look again when its claim ends
            _file_if_overdue_later(pk)

    task = loop.create_task(check())
    _overdue_checks.add(task)
    task.add_done_callback(_overdue_checks.discard)


# --- end antispam ---


def _declared_size(mail_options: list[str]) -> int:
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def mx_protocol_factory(tls_context: ssl.SSLContext | None, listener: str = "smtp"):
    """Protocol factory for ``loop.create_server``: the MX listener (port 25)."""
    handler = InboundHandler()

    def factory() -> MailhostSMTP:
        return MailhostSMTP(handler, listener=listener, tls_context=tls_context,
                            require_starttls=False, auth_require_tls=True)

    return factory
