"""The SMTP server: aiosmtpd's state machine, with what a mail host needs on top.

``MailhostSMTP`` (connection state) advertises PIPELINING,
ENHANCEDSTATUSCODES, CHUNKING and BINARYMIME (and REQUIRETLS under TLS), reads
BDAT chunks, puts an enhanced code on every reply, logs one line per
connection, and can be asked to leave at shutdown. ``InboundHandler``
(transaction rules for the MX) resolves recipients through the directory and
stores the message through the store's group committer before it answers 250.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
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
from apps.delivery import arc, srs
from apps.delivery.filing import Filing, MailParameters, deliver_filed, send_replies
from apps.delivery.linelength import limit_line_length
from apps.delivery.services import RecipientSpec, aenqueue, new_queue_id
from apps.directory.models import Mailbox
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

# RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ]; end-marker ::= "LAST"
# (a keyword, so in any case, as every SMTP keyword). More digits than any size limit
# can allow are a syntax error rather than a huge integer.
_BDAT_ARGUMENT = re.compile(r"([0-9]{1,18})(?: ([Ll][Aa][Ss][Tt]))?")
# Chunk data is read, or skipped, this much at a time: a chunk's size is the
# client's word, not an amount to buffer at once.
_BDAT_READ = 1 << 16


def parse_bdat_argument(argument: str | None) -> tuple[int, bool]:
    """(chunk size, whether it is the LAST chunk) of a BDAT command's
    argument; Invalid when it is not ``chunk-size [SP "LAST"]``."""
    match = _BDAT_ARGUMENT.fullmatch(argument or "")
    if match is None:
        raise Invalid("Syntax: BDAT chunk-size [LAST]")
    return int(match.group(1)), match.group(2) is not None


def split_parameters(params: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Take the named ``NAME=value`` (or bare ``NAME``) parameters out of a
    MAIL/RCPT parameter string (values keep their case, xtext is
    case-sensitive); the rest is left for aiosmtpd. Raises Invalid on a
    repeated parameter."""
    kept: list[str] = []
    taken: dict[str, str] = {}
    for token in params.split():
        name, _, value = token.partition("=")
        if name.upper() in names:
            if name.upper() in taken:
                raise Invalid(f"{name.upper()} given twice")
            taken[name.upper()] = value
        else:
            kept.append(token)
    return " ".join(kept), taken


# A path as nearly every client writes it (RFC 5321 §4.1.2): <dot-atom@domain>,
# ASCII only, then the parameters. After the ">", the email package's parser
# drops a run of whitespace that begins with a space or a tab (it strips it as
# str.lstrip does) and reads comments: a comment is left to it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(
    rf"<(({_ATEXT}(?:\.{_ATEXT})*)@{_LABEL}(?:\.{_LABEL})*)>"
    r"(?:[ \t]\s*([^(\s].*)?|([^ \t(].*))?", re.DOTALL)


def plain_path(argument: str) -> tuple[str, str, str] | None:
    """(local part, address, parameters) of a MAIL/RCPT argument in the common
    form, as aiosmtpd's parser (the email package's) would find them; None
    for anything else, which is left to that parser: it costs about 5 % of
    the MX listener's CPU, twice per message."""
    match = _PLAIN_PATH.fullmatch(argument)
    if match is None:
        return None
    return match.group(2), match.group(1), match.group(3) or match.group(4) or ""


def has_bare_lf(data: bytes) -> bool:
    """Whether a line of ``data`` ends in LF without CR (RFC 5321 §2.3.8).
    Counted rather than matched: a look-behind regex steps through every
    byte of the message in Python's regex engine, a tenth of the listener's
    CPU per 10 KiB message; ``bytes.count`` runs at memory speed."""
    return data.count(b"\n") != data.count(b"\r\n")


# RFC 5321 §4.5.2: the data ends with a line holding a lone dot.
_END_OF_DATA = b"\r\n.\r\n"


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int,
) -> tuple[bytes, str | None]:
    """The data of a DATA command, transparency dots removed (RFC 5321
    §4.5.2), read from just after the 354 up to and with the line holding a
    lone dot; or the refusal when the data was larger than ``size_limit`` or
    had a line longer than ``line_limit`` (CRLF counted), both read to their
    end all the same (§4.2.5), as aiosmtpd answers them.

    aiosmtpd reads the data a line at a time, a Python loop turn per line, a
    sixth of the MX listener's CPU for 10 KiB messages; here each read takes
    everything up to the next ".CRLF" (rare but at the end), and the lines are
    looked at by bytes methods. Only CRLF ends a line, as in aiosmtpd: a bare
    LF before the dot ends nothing (RFC 5321 §2.3.8, SMTP smuggling)."""
    # A CRLF in front stands for the end of the DATA command line, so that a
    # lone dot as the first line ends the data too.
    data = bytearray(b"\r\n")
    too_much = False
    while True:
        try:
            data += await reader.readuntil(b".\r\n")
            if data.endswith(_END_OF_DATA):
                break
        except asyncio.LimitOverrunError as overrun:
            # No ".CRLF" within the reader's limit: take the bytes before
            # where one could begin, and go on.
            data += await reader.readexactly(overrun.consumed)
        if size_limit and len(data) - 2 > size_limit:
            too_much = True  # read on to the end, keeping what could begin it
            del data[:-len(_END_OF_DATA)]
    if too_much or (size_limit and len(data) - 5 > size_limit):
        return b"", "552 Error: Too much mail data"
    del data[-3:]  # the lone dot's line; the CRLF before it ends the last line
    if len(data) > line_limit and max(map(len, data.split(b"\r\n"))) + 2 > line_limit:
        return b"", "500 Line too long (see RFC5321 4.5.3.1.6)"
    return bytes(data).replace(b"\r\n.", b"\r\n")[2:], None


class _IntrospectionOncePerClass:
    """aiosmtpd's SMTP.__init__ finds the AUTH mechanisms with
    ``inspect.getmembers`` of the protocol and the handler, and reads the EHLO
    hook's signature, on every connection: about 1 ms of CPU per connection,
    most of a short session's. This stand-in for the ``inspect`` module that
    aiosmtpd.smtp sees answers those from what it found for the class the
    first time; aiosmtpd keeps only the ``auth_*`` members, so only those are
    returned. Anything else goes to the real module.

    It then lists the ``handle_*`` hooks and ``smtp_*`` commands with
    ``dir()`` of the handler and of the protocol, another tenth of a
    millisecond per connection: ``names`` stands in for that ``dir``, the
    class's names found once, the object's own attributes added each time."""

    def __init__(self) -> None:
        self._auth_names: dict[type, list[str]] = {}
        self._signatures: dict[Any, inspect.Signature] = {}
        self._class_names: dict[type, list[str]] = {}

    def names(self, obj: object) -> list[str]:
        found = self._class_names.get(type(obj))
        if found is None:
            found = self._class_names[type(obj)] = dir(type(obj))
        own = getattr(obj, "__dict__", None)
        return [*found, *own.keys()] if own else found

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


_introspection = _IntrospectionOncePerClass()
aiosmtpd_smtp.inspect = _introspection  # type: ignore[assignment]
aiosmtpd_smtp.dir = _introspection.names  # type: ignore[attr-defined]  # module global over the builtin


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
        # BODY=BINARYMIME and REQUIRETLS of the MAIL command being answered,
        # for start_transaction to put on the envelope.
        self.binarymime = False
        self.require_tls = False

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
        plain = plain_path(arg)
        if plain is not None:
            local, address, rest = plain
            if self.local_part_limit and len(local) > self.local_part_limit:
                return None, None  # as aiosmtpd answers it
            return address, rest
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError):
            return None, None

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self.in_transaction = False

    # --- MAIL parameters of CHUNKING/BINARYMIME and REQUIRETLS ---
    async def take_parameters(
        self, arg: str | None, keyword: str, names: tuple[str, ...],
    ) -> tuple[str | None, dict[str, str] | None]:
        """(the command argument without the named parameters, their values);
        (None, None) after answering a malformed parameter. aiosmtpd refuses
        every parameter it does not know, so ours are taken out first."""
        stripped = self._strip_command_keyword(keyword, arg) if arg else None
        if stripped is None:
            return arg, {}
        address, params = self._getaddr(stripped)
        if address is None or not params:
            return arg, {}
        try:
            kept, taken = split_parameters(params, names)
        except Invalid as error:
            await self.push(f"501 5.5.4 {error.message}")
            return None, None
        head = stripped[: len(stripped) - len(params)].rstrip()
        return f"{keyword}{head} {kept}".rstrip(), taken

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.binarymime = self.require_tls = False
        upper = (arg or "").upper()
        if "BINARYMIME" not in upper and "REQUIRETLS" not in upper:
            # Most MAIL commands: no second parse of the address for nothing.
            await super().smtp_MAIL(arg)
            return
        arg, taken = await self.take_parameters(arg, "FROM:", ("BODY", "REQUIRETLS"))
        if taken is None:
            return
        body = taken.get("BODY")
        self.binarymime = body is not None and body.upper() == "BINARYMIME"
        if body is not None and not self.binarymime:
            arg = f"{arg} BODY={body}"  # 7BIT and 8BITMIME are aiosmtpd's to check
        self.require_tls = "REQUIRETLS" in taken
        if self.require_tls and taken["REQUIRETLS"]:
            await self.push("501 5.5.4 REQUIRETLS takes no value")  # RFC 8689 §2 item 8
            return
        if self.require_tls and self.session.ssl is None:
            # RFC 8689 §2: only in a session that employs TLS (where it is offered).
            await self.push("530 5.7.10 REQUIRETLS needs a TLS session; say STARTTLS first")
            return
        await super().smtp_MAIL(arg)

    # --- CHUNKING (RFC 3030) ---
    @aiosmtpd_smtp.syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and envelope.mail_from and (
                getattr(envelope, "chunks", None) is not None
                or getattr(envelope, "binarymime", False)):
            # RFC 3030 §2: no DATA after BDAT in a transaction; §3: none after
            # BODY=BINARYMIME. The transaction stays as it is until RSET.
            await self.push("503 5.5.1 DATA cannot follow BDAT or BODY=BINARYMIME; "
                            "use BDAT (or RSET)")
            return
        if self._decode_data:
            await super().smtp_DATA(arg)
            return
        # aiosmtpd's own DATA, with the data read in pieces rather than a line at a time.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, refusal = await read_data(
                self._reader, size_limit=self.data_size_limit,
                line_limit=self.line_length_limit)
        except asyncio.CancelledError:
            log.info("connection lost during DATA")  # as aiosmtpd says it
            self._writer.close()
            raise
        if refusal is not None:
            await self.push(refusal)
            self._set_post_data_state()
            return
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is aiosmtpd_smtp.MISSING else status)

    async def _discard(self, size: int) -> None:
        """Read and drop ``size`` octets of chunk data (RFC 3030 §2: the data
        of a failed BDAT is accepted and discarded, so that the next command
        is read where it starts)."""
        while size > 0:
            size -= len(await self._reader.readexactly(min(size, _BDAT_READ)))

    async def smtp_BDAT(self, arg: str | None) -> None:
        try:
            size, last = parse_bdat_argument(arg)
        except Invalid as error:
            # Without a size the data cannot be told from the next command:
            # what follows is read as commands, which the client will see fail.
            await self.push(f"501 5.5.4 {error.message}")
            return
        refusal = await self._bdat_refusal(size)
        if refusal:
            await self._discard(size)
            await self.push(refusal)
            return
        envelope = self.envelope
        assert envelope is not None
        chunks: bytearray = envelope.chunks  # type: ignore[attr-defined]
        while len(chunks) < envelope.chunk_total + size:  # type: ignore[attr-defined]
            wanted = envelope.chunk_total + size - len(chunks)  # type: ignore[attr-defined]
            chunks += await self._reader.readexactly(min(wanted, _BDAT_READ))
        envelope.chunk_total += size  # type: ignore[attr-defined]
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        # The whole message: on through the same path as DATA's (handle_DATA),
        # with the same durability before the 250.
        envelope.original_content = envelope.content = bytes(chunks)
        chunks.clear()
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _bdat_refusal(self, size: int) -> str | None:
        """Why this chunk cannot be taken (its data is then discarded), or None."""
        if not self.session.extended_smtp:  # RFC 3030 §2: an EHLO keyword
            return "503 5.5.1 Say EHLO first"
        if self._auth_required and not self.session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope = self.envelope
        if envelope is None or not envelope.mail_from:
            return "503 5.5.1 Need MAIL before BDAT"
        if not envelope.rcpt_tos:
            return "503 5.5.1 Need RCPT before BDAT"
        failed = getattr(envelope, "chunks_failed", None)
        if failed:
            return failed  # RFC 3030 §2: chunks pipelined behind a failed one
        if getattr(envelope, "chunks", None) is None:
            envelope.chunks = bytearray()  # type: ignore[attr-defined]
            envelope.chunk_total = 0  # type: ignore[attr-defined]
        limit = self.data_size_limit
        if limit and envelope.chunk_total + size > limit:  # type: ignore[attr-defined]
            # Known before a byte is read: nothing of it is kept, nor of the
            # chunks before it; the transaction is over but for the RSET.
            envelope.chunks = bytearray()  # type: ignore[attr-defined]
            envelope.chunks_failed = (  # type: ignore[attr-defined]
                "552 5.3.4 Message too big; the transaction failed, send RSET")
            return f"552 5.3.4 Message size exceeds fixed maximum message size ({limit})"
        return None


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
    # aiosmtpd does not advertise the first two although it honours them;
    # RFC 3030 §2, §3: BDAT and binary bodies; RFC 8689 §2: REQUIRETLS only
    # where it can be given, in a TLS session.
    offered = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-CHUNKING", "250-BINARYMIME"]
    if session.ssl is not None:
        offered.append("250-REQUIRETLS")
    return [*responses[:-1], *offered, *extensions, responses[-1]]


def start_transaction(
    server: MailhostSMTP, envelope: Envelope, address: str, mail_options: list[str],
) -> None:
    """MAIL FROM accepted: the envelope of a new transaction (aiosmtpd's own
    fields plus our queue id and per-recipient resolutions)."""
    envelope.mail_from = address
    envelope.mail_options.extend(mail_options)
    envelope.binarymime = server.binarymime  # type: ignore[attr-defined]
    envelope.require_tls = server.require_tls  # type: ignore[attr-defined]
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
        # A binary body (RFC 3030 §3) has LF octets that end no line; it
        # leaves only with BDAT, where no line ends the data.
        if not envelope.binarymime and has_bare_lf(content):  # type: ignore[attr-defined]
            log.warning("reject id=%s peer=%s reason=bare-lf", queue_id, peer_ip)
            return replies.BARE_LF
        header = received_header(
            helo=session.host_name, peer_ip=peer_ip, by_host=server.hostname,
            protocol=protocol_name(esmtp=session.extended_smtp, tls=session.ssl is not None,
                                   authenticated=bool(session.authenticated)),
            queue_id=queue_id, recipients=envelope.rcpt_tos, when=timezone.now(),
        )
        mailboxes = list({
            mailbox.pk: mailbox
            for resolution in envelope.resolutions.values()  # type: ignore[attr-defined]
            for mailbox in resolution.mailboxes
        }.values())
        mailbox_ids = [mailbox.pk for mailbox in mailboxes]
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
                await _spool(session, envelope, request, mailboxes, acceptance)
            else:
                request.trace_events.append(acceptance)
                plans = await committer(deliver_filed).submit(
                    Filing(request, envelope.mail_from or "", _mail_parameters(envelope)))
                if plans:
                    await database_sync_to_async(send_replies)(plans)
            await _queue_forwards(session, envelope, request.data, queue_id,
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
    session: Session, envelope: Envelope, data: bytes, queue_id: str,
    trace_events: list[TraceEvent],
) -> None:
    """Aliases that point outside: the same message goes to the outbound queue,
    its envelope sender rewritten by SRS (so that it passes SPF at the
    destination and bounces come back to us for the original sender), its body
    lines short enough for the next server (``limit_line_length``), ARC-sealed
    for the alias's domain (RFC 8617) over what our checks found, and tagged
    as it came: REQUIRETLS (RFC 8689 §4.1, every copy alike) and binary."""
    forwarders = [resolution for resolution in envelope.resolutions.values()  # type: ignore[attr-defined]
                  if resolution.external]
    forwards = list(dict.fromkeys(
        address for resolution in forwarders for address in resolution.external))
    if forwards:
        sender, copy = await database_sync_to_async(_forwarded_copy)(
            session, envelope, data, forwarders[0].address)
        await aenqueue(sender=sender, data=copy, queue_id=queue_id,
                       recipients=[RecipientSpec(address) for address in forwards],
                       trace_events=trace_events,
                       require_tls=envelope.require_tls,  # type: ignore[attr-defined]
                       binarymime=envelope.binarymime)  # type: ignore[attr-defined]


def _forwarded_copy(
    session: Session, envelope: Envelope, data: bytes, alias: str,
) -> tuple[str, bytes]:
    """(the SRS sender, the sealed message) for ``_queue_forwards``, in one
    trip to a worker thread."""
    mail_from = envelope.mail_from or ""
    sender = srs.forwarding_sender(mail_from, alias)
    checked = spool.with_authentication_results(
        data, client_ip=_peer_ip(session), helo=session.host_name or "",
        mail_from=mail_from, spf=envelope.spf)  # type: ignore[attr-defined]
    # RFC 3030 §3: a binary body keeps every octet.
    copy = checked if envelope.binarymime else limit_line_length(checked)  # type: ignore[attr-defined]
    return sender, arc.seal(copy, domain=alias.rpartition("@")[2].lower())


def _mail_parameters(envelope: Envelope) -> MailParameters:
    return MailParameters(envelope.require_tls, envelope.binarymime)  # type: ignore[attr-defined]


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
    session: Session, envelope: Envelope, request: DeliveryRequest,
    mailboxes: list[Mailbox], acceptance: TraceEvent,
) -> None:
    """Durable in the spool before the 250; filed by the check task (or now,
    before answering, with MAILHOST_ANTISPAM_INLINE)."""
    facts = spool.SmtpFacts(
        client_ip=_peer_ip(session), helo=session.host_name or "",
        mail_from=envelope.mail_from or "",
        spf=envelope.spf,  # type: ignore[attr-defined]
        authenticated=bool(session.authenticated), queue_id=request.queue_id,
        parameters=_mail_parameters(envelope))
    pk = await committer(spool.spool_batch).submit(spool.SpoolRequest(
        request.data, list(request.mailbox_ids), facts, trace_events=[acceptance],
        mailboxes=mailboxes))
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
