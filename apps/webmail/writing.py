"""The webmail's writing side: turning what the compose form holds into a
message (Python's ``email`` package, policy SMTP: CRLF, encoded headers,
7-bit safe bodies, lines within 998 octets), starting a reply or a forward
from a stored message, saving drafts, and sending through the one
submission service (apps.delivery.submission), as port 587 does."""

from __future__ import annotations

import email
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, make_msgid
from html.parser import HTMLParser

import nh3
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.delivery.submission import (
    AcceptedRecipient,
    Origin,
    Submitted,
    check_recipient,
    check_sender,
    submit_as_user,
)
from apps.directory.models import Mailbox
from apps.directory.services import own_addresses
from apps.store import filed
from apps.store import services as store
from apps.store.models import Flag, Folder, Message, SpecialUse
from apps.webmail.models import WritingSettings
from mailhost.errors import NotFound

# Simple rich text: what the compose toolbar makes, nothing else survives nh3.
RICH_TAGS = {"b", "strong", "i", "em", "a", "ul", "ol", "li", "p", "br", "div"}
RICH_URL_SCHEMES = {"http", "https", "mailto"}


def clean_html(html: str) -> str:
    return nh3.clean(html, tags=RICH_TAGS, attributes={"a": {"href"}},
                     url_schemes=RICH_URL_SCHEMES)


class _TextFromHtml(HTMLParser):
    """The text part of a rich message: paragraphs and list items on lines of
    their own, a link followed by its address."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "div", "br", "ul", "ol"):
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.href:
            self.out.append(f" <{self.href}>")
            self.href = None
        elif tag in ("p", "div", "ul", "ol"):
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(parser.out)).strip() + "\n"


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Letter:
    """What the compose form holds."""

    from_address: str
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str = ""  # empty: plain text only
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str = field(default_factory=lambda: make_msgid(
        domain=settings.MAILHOST_HOSTNAME))

    @property
    def recipients(self) -> list[str]:
        """The bare addresses of To, Cc and Bcc, each once."""
        return list(dict.fromkeys(
            address for _, address in getaddresses([*self.to, *self.cc, *self.bcc])))


def _addresses(values: Sequence[str]) -> str:
    return ", ".join(values)


# CRLF, encoded words in headers, and bodies that any 7-bit hop carries.
POLICY = SMTP.clone(cte_type="7bit")


def _text_cte(text: str) -> str | None:
    """Quoted-printable for text that is not plain ASCII (readable where it
    is mostly ASCII, unlike base64); otherwise the email package's choice."""
    return None if text.isascii() else "quoted-printable"


def build_message(letter: Letter, *, with_bcc: bool) -> bytes:
    """The message as bytes. Bcc is kept only in the sender's own copies
    (draft, Sent), never in what the recipients receive (RFC 5322 §3.6.3)."""
    message = EmailMessage(policy=POLICY)
    local, _, domain = letter.from_address.rpartition("@")
    message["From"] = Address(letter.from_name, local, domain)
    if letter.to:
        message["To"] = _addresses(letter.to)
    if letter.cc:
        message["Cc"] = _addresses(letter.cc)
    if letter.bcc and with_bcc:
        message["Bcc"] = _addresses(letter.bcc)
    message["Subject"] = letter.subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = letter.message_id
    if letter.in_reply_to:  # RFC 5322 §3.6.4
        message["In-Reply-To"] = letter.in_reply_to
    if letter.references:
        message["References"] = " ".join(letter.references)
    if letter.html:
        html = clean_html(letter.html)
        text = html_to_text(html)
        message.set_content(text, cte=_text_cte(text))
        message.add_alternative(html, subtype="html", cte=_text_cte(html))
    else:
        message.set_content(letter.text, cte=_text_cte(letter.text))
    for attachment in letter.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not subtype or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=attachment.filename)
    return message.as_bytes()


# --- stored messages ---------------------------------------------------------------


def owned_message(mailbox: Mailbox, pk: int | str) -> Message:
    """A message of this mailbox by primary key; another's is NotFound."""
    try:
        return Message.objects.select_related("folder").get(pk=int(pk), folder__mailbox=mailbox)
    except (Message.DoesNotExist, ValueError):
        raise NotFound("no such message") from None


def parse_stored(message: Message) -> EmailMessage:
    raw = filed.read_message(message)
    return email.message_from_bytes(raw, policy=default_policy)  # type: ignore[return-value]


def attachments_of(parsed: EmailMessage) -> list[Attachment]:
    """The attachments of a message, exactly as stored (decoded bytes)."""
    found = []
    for part in parsed.iter_attachments():
        if part.is_multipart():
            continue
        found.append(Attachment(part.get_filename() or "attachment",
                                part.get_content_type(), part.get_payload(decode=True) or b""))
    return found


def format_address(name: str, address: str) -> str:
    """``Name <address>``, the name encoded as needed; an address that is not
    ASCII (RFC 6532) is written as it is rather than refused."""
    try:
        return email.utils.formataddr((name, address))
    except UnicodeEncodeError:
        return f'"{name}" <{address}>' if name else address


def _text_content(part: EmailMessage) -> str:
    """A text part as text, also when its charset is one Python lacks."""
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")


def _readable_text(parsed: EmailMessage) -> str:
    body = parsed.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    content = _text_content(body)
    if body.get_content_type() == "text/html":
        return html_to_text(clean_html(content))
    return content


def _header_addresses(parsed: EmailMessage, *names: str) -> list[str]:
    pairs = getaddresses([str(v) for name in names for v in parsed.get_all(name, [])])
    return [format_address(name, address) for name, address in pairs if address]


def _prefixed(prefix: str, subject: str) -> str:
    """"Re: x" once, not "Re: Re: x"."""
    if subject.lower().startswith(prefix.lower()):
        return subject
    return f"{prefix} {subject}".strip()


def _quoted(text: str) -> str:
    return "".join(f"> {line}\n" if line else ">\n" for line in text.splitlines())


@dataclass
class Start:
    """A compose form filled in from a stored message."""

    letter: Letter
    attachments_from: Message | None = None
    replied: Message | None = None
    forwarded: Message | None = None


def start_from(mailbox: Mailbox, source: Message, mode: str) -> Start:
    """Reply, reply to all, or forward ``source`` (one of the user's messages)."""
    parsed = parse_stored(source)
    own = set(own_addresses(mailbox))
    subject = str(parsed.get("Subject", "")).strip()
    sender = str(parsed.get("From", ""))
    date = str(parsed.get("Date", ""))
    # Answer from the identity the message was written to, when it is ours.
    written_to = [a for _, a in getaddresses(
        [str(v) for n in ("To", "Cc") for v in parsed.get_all(n, [])])]
    from_address = next((a.lower() for a in written_to if a.lower() in own), mailbox.address)
    letter = Letter(from_address=from_address)
    text = _readable_text(parsed)
    if mode == "forward":
        letter.subject = _prefixed("Fwd:", subject)
        fields = (("From", sender), ("Date", date), ("Subject", subject),
                  ("To", str(parsed.get("To", ""))))
        heading = "\n".join(["---------- Forwarded message ----------",
                              *(f"{name}: {value}" for name, value in fields if value)])
        letter.text = f"{heading}\n\n{text}"
        return Start(letter, attachments_from=source, forwarded=source)
    letter.subject = _prefixed("Re:", subject)
    reply_to = _header_addresses(parsed, "Reply-To") or _header_addresses(parsed, "From")
    letter.to = reply_to
    if mode == "reply_all":
        def others(names: tuple[str, ...]) -> list[str]:
            return [a for a in _header_addresses(parsed, *names)
                    if getaddresses([a])[0][1].lower() not in own and a not in reply_to]
        letter.to = [*reply_to, *others(("To",))]
        letter.cc = others(("Cc",))
    message_id = str(parsed.get("Message-ID", "")).strip()
    if message_id:  # RFC 5322 §3.6.4: the parent's References, then its Message-ID
        letter.in_reply_to = message_id
        letter.references = [*str(parsed.get("References", "")).split(), message_id]
    letter.text = f"On {date}, {sender} wrote:\n{_quoted(text)}"
    return Start(letter, replied=source)


def letter_from_draft(parsed: EmailMessage) -> Letter:
    """A saved draft back into the compose form (its attachments stay in the
    draft, which the form keeps as the source of the kept ones)."""
    (name, address), = getaddresses([str(parsed.get("From", ""))]) or [("", "")]
    plain = parsed.get_body(preferencelist=("plain",))
    rich = parsed.get_body(preferencelist=("html",))
    return Letter(
        from_address=address.lower(), from_name=name,
        to=_header_addresses(parsed, "To"), cc=_header_addresses(parsed, "Cc"),
        bcc=_header_addresses(parsed, "Bcc"), subject=str(parsed.get("Subject", "")),
        text=_text_content(plain) if plain is not None else "",
        html=clean_html(_text_content(rich)) if rich is not None else "",
        in_reply_to=str(parsed.get("In-Reply-To", "")).strip(),
        references=str(parsed.get("References", "")).split())


# --- drafts and sending ------------------------------------------------------------


def special_folder(mailbox: Mailbox, use: str, default_name: str) -> Folder:
    """The folder marked ``use`` (RFC 6154), whatever the user renamed it to."""
    folder = Folder.objects.filter(mailbox=mailbox, special_use=use).order_by("pk").first()
    return folder or store.get_folder(mailbox, default_name)


def save_draft(mailbox: Mailbox, letter: Letter, *, replacing: Message | None) -> Message:
    """Store the letter in Drafts (\\Draft, \\Seen: an IMAP client sees it) and
    remove the version it replaces, in one transaction."""
    drafts = special_folder(mailbox, SpecialUse.DRAFTS, "Drafts")
    data = build_message(letter, with_bcc=True)
    with transaction.atomic():
        saved = store.append(mailbox, drafts.name, data, flags=Flag.DRAFT | Flag.SEEN)
        _remove(replacing)
    return saved


def _remove(message: Message | None) -> None:
    if message is not None:
        store.remove(message.folder, [message.uid])


def settings_of(mailbox: Mailbox) -> WritingSettings:
    return WritingSettings.objects.filter(mailbox=mailbox).first() or WritingSettings(
        mailbox=mailbox)


def identities(mailbox: Mailbox) -> list[tuple[str, str]]:
    """(address, display name) offered as From: the chosen identities that are
    still the user's, else the own address with the account's name."""
    allowed = set(own_addresses(mailbox))
    chosen = [(i["address"], i.get("name", "")) for i in settings_of(mailbox).identities
              if i.get("address") in allowed]
    return chosen or [(mailbox.address, mailbox.user.display_name)]


# RFC 5788's registry: the keyword mail programs set on a forwarded message.
FORWARDED = "$Forwarded"


def send(
    mailbox: Mailbox, letter: Letter, *, origin: Origin, replacing: Message | None,
    replied: Message | None = None, forwarded: Message | None = None,
) -> Submitted:
    """Submit the letter as port 587 would (sender rules, limits, signing,
    delivery, queue), keep a copy in Sent, drop the draft and mark the message
    answered or forwarded — all or nothing. A refusal raises the service's
    MailhostError; the draft stays."""
    check_sender(mailbox, letter.from_address)
    accepted: list[AcceptedRecipient] = []
    for address in letter.recipients:
        resolution = check_recipient(address, accepted=len(accepted))
        accepted.append(AcceptedRecipient(address, resolution))
    sent_folder = special_folder(mailbox, SpecialUse.SENT, "Sent")
    with transaction.atomic():
        submitted = submit_as_user(mailbox, sender=letter.from_address, recipients=accepted,
                                   data=build_message(letter, with_bcc=False), origin=origin)
        # The Sent copy shows whom the user wrote to in Bcc; the field sits
        # above the signed ones, where it changes no signature.
        bcc = (SMTP.fold_binary("Bcc", SMTP.header_factory("Bcc", _addresses(letter.bcc)))
               if letter.bcc else b"")
        store.append(mailbox, sent_folder.name, bcc + submitted.data, flags=Flag.SEEN)
        _remove(replacing)
        if replied is not None:  # RFC 3501 §2.3.2
            store.set_flags(replied.folder, [replied.uid], mode="add", flags=Flag.ANSWERED)
        if forwarded is not None:
            store.set_flags(forwarded.folder, [forwarded.uid], mode="add",
                            keywords=[FORWARDED])
    return submitted
