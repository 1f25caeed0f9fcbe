"""The SMTP client side of delivery: one connection to one destination for
every queued message bound there, STARTTLS whenever offered (RFC 3207,
opportunistic as RFC 7435 describes unless the route requires it), and a
reply per recipient (RFC 5321 §3.3)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from apps.delivery.dsn import xtext_encode


@dataclass
class OutgoingRecipient:
    address: str
    notify: str = ""
    orcpt: str = ""
    reply: str = ""  # filled in: the final reply for this recipient


@dataclass
class OutgoingMessage:
    sender: str
    data: bytes
    recipients: list[OutgoingRecipient]
    ret: str = ""
    envid: str = ""


@dataclass
class SessionResult:
    host: str
    dsn_passed_on: bool = False  # the next hop took the DSN parameters (RFC 3461 §5.2)
    messages: list[OutgoingMessage] = field(default_factory=list)


class ConnectionFailed(Exception):
    """This host could not take the mail at all; try the next one."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(message.split())}"


def _opportunistic_context() -> ssl.SSLContext:
    # RFC 7435: encrypt whenever the peer can, without requiring a certificate
    # that most MX hosts cannot be authenticated against anyway.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _send_one(client: smtplib.SMTP, message: OutgoingMessage, dsn: bool) -> None:
    mail_options = []
    if client.has_extn("size"):
        mail_options.append(f"SIZE={len(message.data)}")
    if client.has_extn("8bitmime") and any(b > 127 for b in message.data):
        mail_options.append("BODY=8BITMIME")
    if dsn:
        if message.ret:
            mail_options.append(f"RET={message.ret}")
        if message.envid:
            mail_options.append(f"ENVID={xtext_encode(message.envid)}")
    code, text = client.mail(message.sender, mail_options)
    if code >= 300:
        for recipient in message.recipients:
            recipient.reply = _reply(code, text)
        client.rset()
        return
    accepted = []
    for recipient in message.recipients:
        options = []
        if dsn and recipient.notify:
            options.append(f"NOTIFY={recipient.notify}")
        if dsn and recipient.orcpt:
            addr_type, _, address = recipient.orcpt.partition(";")
            options.append(f"ORCPT={addr_type};{xtext_encode(address)}")
        code, text = client.rcpt(recipient.address, options)
        recipient.reply = _reply(code, text)
        if code < 300:
            accepted.append(recipient)
    if not accepted:
        client.rset()
        return
    try:
        code, text = client.data(message.data)
    except smtplib.SMTPDataError as error:  # no 354
        code, text = error.smtp_code, error.smtp_error
    for recipient in accepted:
        recipient.reply = _reply(code, text)
    if code >= 300:
        client.rset()


def deliver_session(
    host: str, address: str, port: int, messages: Sequence[OutgoingMessage], *,
    helo: str, timeout: float, tls: str = "may", username: str = "", password: str = "",
) -> SessionResult:
    """Deliver ``messages`` over one connection; each recipient gets its reply.
    Raises ConnectionFailed when the host takes nothing (connect, greeting,
    EHLO, TLS or AUTH failure)."""
    result = SessionResult(host=host)
    try:
        client = smtplib.SMTP(timeout=timeout, local_hostname=helo)
        client._host = host  # the name STARTTLS sends as SNI; connect() leaves it unset
        code, text = client.connect(address, port)
    except (OSError, smtplib.SMTPException) as error:
        raise ConnectionFailed(f"451 4.4.1 Cannot connect to {host}: {error}") from None
    try:
        if code != 220:
            raise ConnectionFailed(_reply(code, text))
        code, text = client.ehlo()
        if code != 250:
            code, text = client.helo()
            if code != 250:
                raise ConnectionFailed(_reply(code, text))
        if tls != "none" and client.has_extn("starttls"):
            code, text = client.starttls(context=_opportunistic_context())
            client.ehlo()
        elif tls == "require":
            raise ConnectionFailed(f"451 4.7.4 {host} does not offer STARTTLS")
        if username:
            try:
                client.login(username, password)
            except smtplib.SMTPException as error:
                raise ConnectionFailed(f"451 4.7.0 Authentication at {host} failed: "
                                       f"{error}") from None
        result.dsn_passed_on = client.has_extn("dsn")
        for message in messages:
            _send_one(client, message, result.dsn_passed_on)
            result.messages.append(message)
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()
    except ConnectionFailed:
        client.close()
        raise
    except (TimeoutError, OSError, smtplib.SMTPException, ssl.SSLError) as error:
        client.close()
        if not result.messages:
            raise ConnectionFailed(f"451 4.4.2 Connection to {host} broke: {error}") from None
        # Messages finished before the break keep their replies; the rest retry.
        for message in messages[len(result.messages):]:
            for recipient in message.recipients:
                recipient.reply = f"451 4.4.2 Connection to {host} broke: {error}"
            result.messages.append(message)
    return result
