"""Message submission (RFC 6409): port 587 with STARTTLS and port 465 with
implicit TLS (RFC 8314 §3.3), for the platform's own users.

``SubmissionSMTP`` adds to the MX's connection state: AUTH PLAIN/LOGIN checked
by the directory off the event loop, AUTH offered on the implicit-TLS port
(aiosmtpd only counts STARTTLS as encryption), and the DSN parameters of
RFC 3461 on MAIL and RCPT. ``SubmissionHandler`` holds the transaction rules:
the sender must be the user's, per-user limits, and a durable hand-over to the
store (local recipients) and the outbound queue (remote ones) before the 250.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from base64 import b64decode
from binascii import Error as Base64Error
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, Session
from django.conf import settings
from django.utils import timezone

from apps.delivery import submission
from apps.delivery.client import only_crlf_line_ends
from apps.delivery.dsn import parse_notify, parse_orcpt, xtext_decode
from apps.directory.models import DkimKey, Mailbox
from apps.directory.services import aauthenticate, plaintext_auth_allowed
from apps.smtp import replies
from apps.smtp.received import protocol_name, received_header
from apps.smtp.server import (
    MailhostSMTP,
    _declared_size,
    ehlo_responses,
    start_transaction,
)
from mailhost.errors import Invalid, MailhostError

log = logging.getLogger("mailhost.smtp")

# RFC 3461 §4.3-4.4 (MAIL) and §4.1-4.2 (RCPT); AUTH= of RFC 4954 §5 is accepted and unused.
_MAIL_PARAMETERS = ("RET", "ENVID", "AUTH")
_RCPT_PARAMETERS = ("NOTIFY", "ORCPT")
_ENVID_MAX = 100  # RFC 3461 §4.4


def _mail_dsn(taken: dict[str, str]) -> dict[str, str]:
    ret = taken.get("RET", "").upper()
    if "RET" in taken and ret not in ("FULL", "HDRS"):
        raise Invalid("RET must be FULL or HDRS")
    envid = xtext_decode(taken["ENVID"]) if "ENVID" in taken else ""
    if len(envid) > _ENVID_MAX:
        raise Invalid("ENVID longer than 100 characters")
    return {"ret": ret, "envid": envid}


def _rcpt_dsn(taken: dict[str, str]) -> dict[str, str]:
    return {
        "notify": parse_notify(taken["NOTIFY"]) if "NOTIFY" in taken else "",
        "orcpt": parse_orcpt(taken["ORCPT"]) if "ORCPT" in taken else "",
    }


# handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
_INVALID = AuthResult(success=False, handled=False)


def _peer_address(peer: Any) -> str | None:
    return peer[0] if isinstance(peer, tuple) else None


class SubmissionSMTP(MailhostSMTP):
    """One submission connection: AUTH required before MAIL."""

    def __init__(self, handler: Any, *, listener: str, **kwargs: Any) -> None:
        kwargs.setdefault("data_size_limit", settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE)
        super().__init__(handler, listener=listener, auth_required=True,
                         auth_require_tls=True, **kwargs)
        self.mail_dsn: dict[str, str] = {}
        self.rcpt_dsn: dict[str, str] = {}
        # The DKIM keys looked up on this connection, by domain.
        self.signing_keys: dict[str, list[DkimKey]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # Implicit TLS (RFC 8314 §3.3): the connection is encrypted from the
            # first byte, which aiosmtpd does not know, so it would never offer AUTH.
            self.session.ssl = {"ssl_object": ssl_object,
                                "cipher": transport.get_extra_info("cipher"),
                                "peercert": transport.get_extra_info("peercert")}
            self._auth_require_tls = False
        elif plaintext_auth_allowed(tls=False, remote_ip=_peer_address(self.session.peer)):
            self._auth_require_tls = False

    # --- AUTH (RFC 4954), checked by the directory off the event loop ---
    async def _check_login(self, login: bytes, password: bytes) -> AuthResult:
        try:
            login_text, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return _INVALID
        peer = self.session.peer
        mailbox = await aauthenticate(
            login_text, secret, remote_ip=peer[0] if isinstance(peer, tuple) else None,
            protocol=self.listener)
        if mailbox is None:
            return _INVALID
        return AuthResult(success=True, auth_data=mailbox)

    async def _decode_initial(self, args: list[str], challenge: str) -> bytes | None:
        if len(args) == 1:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else answer  # type: ignore[return-value]
        try:
            return b64decode(args[1].encode(), validate=True)
        except (Base64Error, ValueError):
            await self.push("501 5.5.2 Cannot decode base64")
            return None

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        response = await self._decode_initial(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response")
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        # RFC 4616 §2: acting as another identity is not offered here.
        if authzid and authzid != login:
            return _INVALID
        return await self._check_login(login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._decode_initial(args, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check_login(login, password)  # type: ignore[arg-type]

    # --- DSN parameters (RFC 3461) ---
    async def _take_dsn(
        self, arg: str | None, keyword: str, names: tuple[str, ...],
    ) -> tuple[str | None, dict[str, str] | None]:
        """(the command argument without the DSN parameters, their values);
        (None, None) after answering a malformed parameter."""
        if not arg or "=" not in arg:  # no parameter at all: nothing to take
            return arg, {}
        arg, taken = await self.take_parameters(arg, keyword, names)
        if taken is None:
            return None, None
        try:
            return arg, _mail_dsn(taken) if keyword == "FROM:" else _rcpt_dsn(taken)
        except Invalid as error:
            await self.push(f"501 5.5.4 {error.message}")
            return None, None

    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, values = await self._take_dsn(arg, "FROM:", _MAIL_PARAMETERS)
        if values is None:
            return
        self.mail_dsn = values
        await super().smtp_MAIL(arg)

    def pipelined_recipients(self) -> list[str]:
        """The addresses of the RCPT commands the client has sent already
        behind the command being answered (RFC 2920 §3.1: a pipelined group),
        read from the input not yet taken, in order, up to the first other
        command or incomplete line. Nothing is consumed: each RCPT is still
        read and answered in its turn."""
        buffered = bytes(self._reader._buffer)  # type: ignore[attr-defined]
        addresses = []
        for line in buffered.split(b"\r\n")[:-1]:  # the last piece is no whole line
            verb, _, arg = line.decode("utf-8", "surrogateescape").partition(" ")
            stripped = self._strip_command_keyword("TO:", arg) if verb.upper() == "RCPT" else None
            address = self._getaddr(stripped)[0] if stripped else None
            if not address:
                break
            addresses.append(address)
        return addresses

    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, values = await self._take_dsn(arg, "TO:", _RCPT_PARAMETERS)
        if values is None:
            return
        self.rcpt_dsn = values
        await super().smtp_RCPT(arg)


class SubmissionHandler:
    """Transaction rules for the platform's own users: each step asks the one
    submission service (apps.delivery.submission) that the webmail asks too."""

    async def handle_EHLO(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope,
        hostname: str, responses: list[str],
    ) -> list[str]:
        return ehlo_responses(session, hostname, responses, "250-DSN")  # RFC 3461 §4

    async def handle_MAIL(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope,
        address: str, mail_options: list[str],
    ) -> str:
        mailbox: Mailbox = session.auth_data
        try:
            resolved = await submission.acheck_sender(
                mailbox, address, upcoming=server.pipelined_recipients(),
                declared_size=_declared_size(mail_options))
        except MailhostError as error:
            log.warning("refused sender login=%s from=<%s> reason=%s", mailbox.address,
                        address, error.code)
            return error.smtp_reply()
        start_transaction(server, envelope, address, mail_options)
        envelope.dsn = dict(server.mail_dsn)  # type: ignore[attr-defined]
        envelope.accepted = []  # type: ignore[attr-defined]
        envelope.resolved = resolved  # type: ignore[attr-defined]
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope,
        address: str, rcpt_options: list[str],
    ) -> str:
        # Resolved with MAIL when the client pipelined this RCPT behind it.
        outcome = envelope.resolved.pop(address, None)  # type: ignore[attr-defined]
        try:
            if outcome is None:
                resolution = await submission.acheck_recipient(
                    address, accepted=len(envelope.rcpt_tos),
                    declared_size=_declared_size(envelope.mail_options))
            else:
                resolution = submission.recipient_from(outcome, accepted=len(envelope.rcpt_tos))
        except MailhostError as error:
            return error.smtp_reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.accepted.append(  # type: ignore[attr-defined]
            submission.AcceptedRecipient(address, resolution, **server.rcpt_dsn))
        return replies.RECIPIENT_OK

    async def handle_DATA(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope,
    ) -> str:
        content: bytes = envelope.original_content or b""
        queue_id: str = envelope.queue_id  # type: ignore[attr-defined]
        mailbox: Mailbox = session.auth_data
        # A binary body (RFC 3030 §3) has CR and LF octets that end no line;
        # it leaves only with BDAT, where no line ends the data. Stricter than
        # the MX, which takes a bare CR as data as Postfix does: our own users'
        # clients never send one, and what they send is relayed.
        if not envelope.binarymime and not only_crlf_line_ends(content):  # type: ignore[attr-defined]
            return replies.BARE_NEWLINE
        peer = session.peer
        peer_ip = peer[0] if isinstance(peer, tuple) else str(peer)
        received = received_header(
            helo=session.host_name, by_host=server.hostname, queue_id=queue_id,
            peer_ip=peer_ip,
            protocol=protocol_name(esmtp=session.extended_smtp, tls=session.ssl is not None,
                                   authenticated=True),
            recipients=envelope.rcpt_tos, when=timezone.now())
        dsn = envelope.dsn  # type: ignore[attr-defined]
        try:
            sent = await submission.asubmit_as_user(
                mailbox, sender=envelope.mail_from,
                recipients=envelope.accepted,  # type: ignore[attr-defined]
                data=content, ret=dsn.get("ret", ""), envid=dsn.get("envid", ""),
                queue_id=queue_id, received=received, key_cache=server.signing_keys,
                require_tls=envelope.require_tls,  # type: ignore[attr-defined]
                binarymime=envelope.binarymime,  # type: ignore[attr-defined]
                origin=submission.Origin(
                    listener=server.listener, peer_ip=peer_ip, tls=session.ssl is not None,
                    helo=session.host_name or ""))
        except MailhostError as error:
            log.info("refused id=%s login=%s reason=%s", queue_id, mailbox.address, error.code)
            return error.smtp_reply()
        except Exception:
            log.exception("submission failed id=%s", queue_id)
            return replies.TEMPORARY_FAILURE
        log.info("submitted id=%s login=%s from=<%s> local=%d remote=%d size=%d", queue_id,
                 mailbox.address, envelope.mail_from, sent.local, sent.remote, len(sent.data))
        return f"250 2.0.0 OK id={queue_id}"


def _factory(tls_context: ssl.SSLContext | None, listener: str):
    handler = SubmissionHandler()

    def factory() -> SubmissionSMTP:
        return SubmissionSMTP(handler, listener=listener, tls_context=tls_context)

    return factory


def submission_protocol_factory(tls_context: ssl.SSLContext | None, listener: str = "submission"):
    """Port 587: STARTTLS, then AUTH (RFC 6409, RFC 3207)."""
    return _factory(tls_context, listener)


def smtps_protocol_factory(tls_context: ssl.SSLContext | None, listener: str = "smtps"):
    """Port 465: the listener wraps the socket in TLS (RFC 8314 §3.3); no STARTTLS inside."""
    return _factory(None, listener)
