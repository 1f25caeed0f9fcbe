"""Phishing samples built for these tests (no third-party mail in them):
each aims at one rule, against the hosted domain example.org whose user is
bob@example.org. They are written as an attacker's mailer writes them."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from email import policy
from email.message import EmailMessage

HOSTED = "example.org"
# "example.org" with a Cyrillic "а" (U+0430): an IDN homograph.
HOMOGRAPH = "ex\u0430mple.org"
HOMOGRAPH_ACE = HOMOGRAPH.encode("idna").decode("ascii")  # xn--...


def build(*, sender: str = "Support <support@sender.example>", subject: str = "Your account",
          text: str = "Please read the attached notice.", html: str | None = None,
          reply_to: str | None = None,
          attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bob@example.org"
    message["Subject"] = subject
    message["Date"] = "Thu, 26 Nov 2026 10:00:00 +0000"
    message["Message-ID"] = f"<{abs(hash((sender, subject, text)))}@sender.example>"
    if reply_to:
        message["Reply-To"] = reply_to
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=policy.SMTP)


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def encrypted_zip(name: str, data: bytes) -> bytes:
    """A zip whose one entry has the encryption flag (APPNOTE 4.4.4 bit 0),
    as "zip -e" makes (Python's zipfile reads those but cannot write them):
    the bytes are stored, with a 12-byte encryption header in front, which is
    all a reader of the central directory can tell apart anyway."""
    body = bytes(12) + data
    crc = zlib.crc32(data)
    encoded = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x1, 0, 0, 0, crc, len(body),
                        len(data), len(encoded), 0) + encoded + body
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0x1, 0, 0, 0, crc,
                          len(body), len(data), len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


# --- the samples --------------------------------------------------------------------

# A lookalike of the hosted domain in From, signed or not.
LOOKALIKE = build(sender=f"IT Service Desk <helpdesk@{HOMOGRAPH_ACE}>",
                  subject="Password expires today",
                  text="Your mailbox password expires today. Keep it by signing in.")

# Our own domain shown in the display name, the address elsewhere.
DISPLAY_NAME = build(sender='"bob@example.org" <bob.example.org@freemail.example>',
                     subject="Quick favour",
                     text="Are you at your desk? I need you to buy gift cards for a client.")

# A link that shows the bank and leads elsewhere; another to a bare IP address.
LINK_MISMATCH = build(
    sender="Bank <notice@bank.example>", subject="Unusual sign-in",
    text="Review the sign-in at https://www.bank.example/review",
    html='<p>Review it at <a href="http://bank-example.phish.example/login">'
         "https://www.bank.example/review</a> or "
         '<a href="http://198.51.100.7/verify">here</a>.</p>')

# Executable behind a document's name, zipped with a macro document.
ATTACHMENTS = build(
    sender="Accounts <accounts@supplier.example>", subject="Invoice 4471",
    text="Invoice attached.",
    attachments=(
        ("invoice.pdf.exe", "application/octet-stream", b"MZ\x90\x00" + bytes(60)),
        ("statement.zip", "application/zip",
         zip_of({"statement.docm": b"PK", "word/vbaProject.bin": b"\xd0\xcf"})),
    ))

# A password-protected archive with a script inside.
ENCRYPTED = build(
    sender="Courier <tracking@parcel.example>", subject="Parcel held",
    text="The delivery note is attached. Password: 4471",
    attachments=(("note.zip", "application/zip", encrypted_zip("note.js", b"WScript")),))

# From claims our domain, replies go to a free-mail address.
REPLY_TO = build(sender="Payroll <payroll@example.org>", subject="Update your bank details",
                 text="Reply with your new bank details before Friday.",
                 reply_to="payroll.example.org@freemail.example")

# An ordinary message with a link: the control.
HAM = build(sender="Ann <ann@friend.example>", subject="Photos",
            text="The photos from Saturday: https://photos.friend.example/album/12",
            html='<p>The photos from Saturday: <a href="https://photos.friend.example/album/12">'
                 "photos.friend.example/album/12</a></p>")
