"""The SMTP client side of delivery: one connection to one destination for
the queued messages bound there, batch after batch, STARTTLS whenever offered (RFC 3207,
opportunistic as RFC 7435 describes unless the route requires it), and a
reply per recipient (RFC 5321 §3.3)."""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from apps.delivery import tlsrpt
from apps.delivery.dsn import headers_of, xtext_encode


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
    # RFC 8689: REQUIRETLS given with the message (services._send picks the
    # hosts), or "TLS-Required: No" in its header (§3, no recipient policy).
    require_tls: bool = False
    tls_optional: bool = False
    binarymime: bool = False  # RFC 3030 §3: sent as it is, with BDAT, or not at all


class ConnectionFailed(Exception):
    """This host could not take the mail at all; try the next one."""

    def __init__(self, reply: str, tls_result: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.tls_result = tls_result  # RFC 8460 §4.3 result type, when TLS failed


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


# RFC 8689 §3: requiretls-field = "TLS-Required:" [FWS] "No" CRLF
_TLS_REQUIRED_FIELD = re.compile(rb"(?im)^TLS-Required:[ \t]*(?:\r\n[ \t]+)?(\S*)[ \t]*\r?$")


def tls_not_required(data: bytes) -> bool:
    """Whether the header says "TLS-Required: No" (RFC 8689 §3, §4.2.2): one
    such field (more than one MUST NOT appear, and then none counts)."""
    values = _TLS_REQUIRED_FIELD.findall(headers_of(data))
    return len(values) == 1 and values[0].lower() == b"no"


_NEWLINE = re.compile(rb"\r\n|\r|\n")


def only_crlf_line_ends(data: bytes) -> bool:
    """Whether every CR and LF in ``data`` is part of a CRLF (RFC 5321 §2.3.8):
    three counts, a twentieth of the time of a regex looking for a bare one."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf and data.count(b"\n") == crlf


def crlf_lines(data: bytes) -> bytes:
    """Every line ended by CRLF (RFC 5321 §2.3.8): a bare CR or LF becomes CRLF.
    smtplib dot-stuffs only after an LF, and some receivers end a line (and the
    data, at "<CR>.<CR>" or "<LF>.<LF>") where we see none: with bare ends left
    in, a message we relay could be cut in two there (SMTP smuggling)."""
    if only_crlf_line_ends(data):
        return data  # the common case, without the slower regex
    return _NEWLINE.sub(b"\r\n", data)


def _mail_options(
    client: smtplib.SMTP, message: OutgoingMessage, data: bytes, dsn: bool,
) -> list[str]:
    options = []
    if client.has_extn("size"):
        options.append(f"SIZE={len(data)}")
    if message.binarymime:
        options.append("BODY=BINARYMIME")
    elif client.has_extn("8bitmime") and not data.isascii():
        options.append("BODY=8BITMIME")
    # RFC 8689 §4.2.1 (the host was chosen for it), and §5: a report on such a
    # message asks for it too where the next hop offers it.
    if message.require_tls and client.has_extn("requiretls"):
        options.append("REQUIRETLS")
    if dsn:
        if message.ret:
            options.append(f"RET={message.ret}")
        if message.envid:
            options.append(f"ENVID={xtext_encode(message.envid)}")
    return options


def _rcpt_options(recipient: OutgoingRecipient, dsn: bool) -> list[str]:
    options = []
    if dsn and recipient.notify:
        options.append(f"NOTIFY={recipient.notify}")
    if dsn and recipient.orcpt:
        addr_type, _, address = recipient.orcpt.partition(";")
        options.append(f"ORCPT={addr_type};{xtext_encode(address)}")
    return options


def _send_one(client: smtplib.SMTP, message: OutgoingMessage, dsn: bool) -> None:
    if message.binarymime and not (client.has_extn("chunking")
                                   and client.has_extn("binarymime")):
        # RFC 3030 §3: never binary data to a server that did not offer it;
        # of the three ways out (convert to 8bit, to 7bit, or fail) we fail:
        # a permanent error, and the sender gets a report.
        for recipient in message.recipients:
            recipient.reply = ("554 5.6.3 The next server does not accept binary MIME "
                               "(BINARYMIME), and Mailhost does not convert it")
        return
    # The bytes as they go on the wire, for both paths below; a binary body
    # keeps every octet (RFC 3030 §3).
    data = message.data if message.binarymime else crlf_lines(message.data)
    if client.has_extn("pipelining") and not message.binarymime:
        _send_one_pipelined(client, message, data, dsn)
        return
    code, text = client.mail(message.sender, _mail_options(client, message, data, dsn))
    if code >= 300:
        for recipient in message.recipients:
            recipient.reply = _reply(code, text)
        client.rset()
        return
    accepted = []
    for recipient in message.recipients:
        code, text = client.rcpt(recipient.address, _rcpt_options(recipient, dsn))
        recipient.reply = _reply(code, text)
        if code < 300:
            accepted.append(recipient)
    if not accepted:
        client.rset()
        return
    if message.binarymime:
        # RFC 3030 §2: the whole message as one chunk, no dot-stuffing.
        client.send(f"BDAT {len(data)} LAST\r\n".encode() + data)
        code, text = client.getreply()
    else:
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as error:  # no 354
            code, text = error.smtp_code, error.smtp_error
    for recipient in accepted:
        recipient.reply = _reply(code, text)
    if code >= 300:
        client.rset()


def _command(verb: str, address: str, options: list[str]) -> bytes:
    return (f"{verb}:<{address}>{''.join(' ' + o for o in options)}\r\n"
            .encode())


def _send_one_pipelined(
    client: smtplib.SMTP, message: OutgoingMessage, data: bytes, dsn: bool,
) -> None:
    """MAIL, every RCPT and DATA in one group (RFC 2920 §3.1), then the
    content: two round trips per message instead of three and one per recipient.
    Every reply is read and matched to its command by counting."""
    group = _command("MAIL FROM", message.sender, _mail_options(client, message, data, dsn))
    group += b"".join(_command("RCPT TO", r.address, _rcpt_options(r, dsn))
                      for r in message.recipients)
    client.send(group + b"DATA\r\n")
    mail_code, mail_text = client.getreply()
    accepted = []
    for recipient in message.recipients:
        code, text = client.getreply()
        # RFC 5321 §3.3: a failed MAIL makes each RCPT fail too; its reply says why.
        recipient.reply = _reply(code, text) if mail_code < 300 else _reply(
            mail_code, mail_text)
        if code < 300 and mail_code < 300:
            accepted.append(recipient)
    code, text = client.getreply()
    if code != 354:
        client.rset()
        return
    if not accepted:
        # RFC 2920 §3.1: DATA accepted although no recipient was: a single dot.
        client.send(b".\r\n")
        client.getreply()
        client.rset()
        return
    # RFC 5321 §4.5.2: a line starting with a dot gets another one.
    content = _LEADING_DOT.sub(b"..", data)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    client.send(content + b".\r\n")
    code, text = client.getreply()
    for recipient in accepted:
        recipient.reply = _reply(code, text)
    if code >= 300:
        client.rset()


_LEADING_DOT = re.compile(rb"(?m)^\.")


class DeliverySession:
    """One SMTP connection to one host, kept open for several batches of
    messages (``send``) with RSET between failed transactions; ``close`` says
    QUIT. Raises ConnectionFailed when the host takes nothing (connect,
    greeting, EHLO, TLS or AUTH failure)."""

    def __init__(
        self, host: str, address: str, port: int, *, helo: str, timeout: float,
        tls: str = "may", username: str = "", password: str = "",
        verify_context: ssl.SSLContext | None = None, require_tls: bool = False,
    ) -> None:
        self.host = host
        try:
            self.client = smtplib.SMTP(timeout=timeout, local_hostname=helo)
            # The name STARTTLS sends as SNI; connect() leaves it unset.
            self.client._host = host  # type: ignore[attr-defined]
            code, text = self.client.connect(address, port)
        except (OSError, smtplib.SMTPException) as error:
            raise ConnectionFailed(f"451 4.4.1 Cannot connect to {host}: {error}") from None
        try:
            self._start(code, text, tls, username, password, verify_context, require_tls)
            if require_tls and not self.client.has_extn("requiretls"):
                # RFC 8689 §4.2.1 step 5, §5: the status code it names.
                raise ConnectionFailed(f"550 5.7.30 REQUIRETLS support required: {host} "
                                       "does not offer REQUIRETLS after STARTTLS")
        except ConnectionFailed:
            self.client.close()
            raise
        except (TimeoutError, OSError, smtplib.SMTPException, ssl.SSLError) as error:
            self.client.close()
            raise ConnectionFailed(
                f"451 4.4.2 Connection to {host} broke: {error}",
                tlsrpt.VALIDATION_FAILURE if isinstance(error, ssl.SSLError) else "") from None
        self.dsn_passed_on = self.client.has_extn("dsn")
        # RFC 8460 §4.3: the session's TLS outcome, for the TLS report.
        self.tls_result = (tlsrpt.SUCCESS if self.encrypted else
                           tlsrpt.STARTTLS_NOT_SUPPORTED if tls != "none" else "")
        self.broken = False

    def _start(self, code: int, text: bytes, tls: str, username: str, password: str,
               verify_context: ssl.SSLContext | None, require_tls: bool) -> None:
        client = self.client
        if code != 220:
            raise ConnectionFailed(_reply(code, text))
        code, text = client.ehlo()
        if code != 250:
            code, text = client.helo()
            if code != 250:
                raise ConnectionFailed(_reply(code, text))
        if verify_context is not None:
            self._start_verified_tls(verify_context, required=require_tls)
        elif tls != "none" and client.has_extn("starttls"):
            client.starttls(context=_opportunistic_context())
            client.ehlo()
        elif tls == "require":
            raise ConnectionFailed(f"451 4.7.4 {self.host} does not offer STARTTLS")
        if username:
            try:
                client.login(username, password)
            except smtplib.SMTPException as error:
                raise ConnectionFailed(f"451 4.7.0 Authentication at {self.host} failed: "
                                       f"{error}") from None

    def _start_verified_tls(self, context: ssl.SSLContext, *, required: bool) -> None:
        """RFC 8461 §4.2, §5 (an MTA-STS policy in enforce mode): STARTTLS and a
        certificate valid for the MX host name, or no delivery to this host.
        ``required``: for a REQUIRETLS message (RFC 8689 §4.2.1 step 4), whose
        failure is permanent (5.7.10, §4.2.1) rather than a policy's 4.7.x."""
        why = ("the message requires (REQUIRETLS)" if required
               else "the MTA-STS policy of the domain requires")
        if not self.client.has_extn("starttls"):
            raise ConnectionFailed(
                f"{'550 5.7.10' if required else '451 4.7.4'} {self.host} does not offer "
                f"STARTTLS, which {why}", tlsrpt.STARTTLS_NOT_SUPPORTED)
        try:
            self.client.starttls(context=context)
        except ssl.SSLCertVerificationError as error:
            raise ConnectionFailed(
                f"{'550 5.7.10' if required else '451 4.7.5'} The certificate of "
                f"{self.host} is not valid for it ({error.verify_message}), which {why}",
                tlsrpt.result_of_verify_code(error.verify_code)) from None
        self.client.ehlo()

    @property
    def local_address(self) -> str:
        return self.client.sock.getsockname()[0] if self.client.sock else ""

    @property
    def encrypted(self) -> bool:
        return isinstance(self.client.sock, ssl.SSLSocket)

    def send(self, messages: Sequence[OutgoingMessage]) -> int:
        """Send each message; every recipient gets its reply. Returns how many
        messages went through a whole transaction; when the connection breaks,
        the rest get a 4xx reply and the session is ``broken``."""
        done = 0
        try:
            for message in messages:
                _send_one(self.client, message, self.dsn_passed_on)
                done += 1
        except (TimeoutError, OSError, smtplib.SMTPException, ssl.SSLError) as error:
            self.broken = True
            self.client.close()
            # Messages finished before the break keep their replies; the rest retry.
            for message in messages[done:]:
                for recipient in message.recipients:
                    recipient.reply = f"451 4.4.2 Connection to {self.host} broke: {error}"
        return done

    def close(self) -> None:
        if not self.broken:
            with contextlib.suppress(OSError, smtplib.SMTPException, ssl.SSLError):
                self.client.quit()
        self.client.close()
        self.broken = True
