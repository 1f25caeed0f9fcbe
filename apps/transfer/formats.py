"""Mail in files: mbox and Maildir, as pure functions over bytes and names.

mbox (RFC 4155): each message opens with a ``From sender date`` line and is
followed by an empty line; body lines that would read as a ``From `` line are
quoted with ``>``. mboxrd quotes ``>*From `` (so quoting is reversible), mboxo
only ``From ``. Flags travel in ``Status:``/``X-Status:`` header fields and
keywords in ``X-Keywords:``, as mutt and Dovecot's mbox driver keep them; they
are taken out of the message on import and put back on export, so a round trip
gives back the bytes filed.

Maildir (https://cr.yp.to/proto/maildir.html, and Maildir++ folders): one file
per message in ``cur/`` or ``new/``, flags as the letters after ``:2,`` in the
file name, keywords as the letters ``a``-``z`` indexed by the folder's
``dovecot-keywords`` file (Dovecot's extension), the internal date as the file's
mtime. Sub-folders are ``.Level1.Level2`` directories beside the root (INBOX),
each level in IMAP's modified UTF-7.

Files use LF line ends; the store keeps CRLF (``mime.with_crlf`` on import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from imapclient import imap_utf7

from apps.store.models import Flag

# --- flags ----------------------------------------------------------------------------


_SYSTEM_FLAGS = {name.lower(): bit for name, bit in Flag.NAMES.items()}


def flag_bits(names: Iterable[str]) -> tuple[int, list[str]]:
    """IMAP flag names as the store keeps them: system-flag bits and keywords.
    Other system flags (``\\Recent``, a server's own) cannot be stored and are
    dropped (RFC 3501 §2.3.2)."""
    bits, keywords = 0, []
    for name in names:
        bit = _SYSTEM_FLAGS.get(name.lower())  # RFC 3501 §9: flag names are atoms, any case
        if bit is not None:
            bits |= bit
        elif not name.startswith("\\") and name not in keywords:
            keywords.append(name)
    return bits, keywords


# Maildir info letters (cr.yp.to: "2," then the flags in ASCII order).
MAILDIR_LETTERS = {"D": Flag.DRAFT, "F": Flag.FLAGGED, "R": Flag.ANSWERED,
                   "S": Flag.SEEN, "T": Flag.DELETED}
# mutt's and Dovecot's mbox: Status holds R (read) and O (old), X-Status
# A (answered), F (flagged), T (draft), D (deleted).
STATUS_LETTERS = {"R": Flag.SEEN}
X_STATUS_LETTERS = {"A": Flag.ANSWERED, "F": Flag.FLAGGED, "T": Flag.DRAFT, "D": Flag.DELETED}


def _letters(bits: int, table: dict[str, int]) -> str:
    return "".join(letter for letter, bit in sorted(table.items()) if bits & bit)


def _bits(letters: str, table: dict[str, int]) -> int:
    bits = 0
    for letter in letters:
        bits |= table.get(letter, 0)
    return bits


# --- header fields carrying flags -------------------------------------------------------

_FLAG_FIELDS = (b"status", b"x-status", b"x-keywords")


def _header_end(data: bytes) -> int:
    """Where the header block's empty line starts (len(data) when none)."""
    if data.startswith((b"\r\n", b"\n")):
        return 0
    match = re.search(rb"\r?\n\r?\n", data)
    return match.start() + (2 if data[match.start()] == 13 else 1) if match else len(data)


def take_flag_fields(data: bytes) -> tuple[bytes, int, list[str]]:
    """The message without its Status, X-Status and X-Keywords fields, and the
    flags and keywords they held."""
    end = _header_end(data)
    kept: list[bytes] = []
    bits, keywords = 0, []
    dropping = False
    for line in data[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = bool(colon) and name.strip().lower() in _FLAG_FIELDS
        if not dropping:
            kept.append(line)
            continue
        text = value.decode("ascii", "replace").strip()
        field = name.strip().lower()
        if field == b"status":
            bits |= _bits(text, STATUS_LETTERS)
        elif field == b"x-status":
            bits |= _bits(text, X_STATUS_LETTERS)
        else:
            keywords += [k for k in text.replace(",", " ").split() if k not in keywords]
    return b"".join(kept) + data[end:], bits, keywords


def with_flag_fields(data: bytes, bits: int, keywords: Sequence[str]) -> bytes:
    """``data`` with Status, X-Status and X-Keywords fields at the end of its
    header, as ``take_flag_fields`` reads them (CRLF line ends)."""
    fields = b"Status: " + (_letters(bits, STATUS_LETTERS) + "O").encode() + b"\r\n"
    x_status = _letters(bits, X_STATUS_LETTERS)
    if x_status:
        fields += b"X-Status: " + x_status.encode() + b"\r\n"
    if keywords:
        fields += b"X-Keywords: " + " ".join(keywords).encode() + b"\r\n"
    end = _header_end(data)
    if end == len(data) and data and not data.endswith(b"\n"):
        return data + b"\r\n" + fields
    return data[:end] + fields + data[end:]


# --- mbox ---------------------------------------------------------------------------------

_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_MBOXO_QUOTED = re.compile(rb"^>(From )", re.MULTILINE)
_TO_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)
# The asctime date at the end of a From_ line; some writers add a zone or
# "remote from" after it.
_FROM_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb" +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))? +(\d{4})")
_MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec"]


@dataclass(frozen=True)
class MboxMessage:
    from_line: bytes  # without its line end
    data: bytes  # unquoted, LF line ends as in the file

    @property
    def date(self) -> datetime | None:
        """The From_ line's date (UTC, as RFC 4155 §2 asks), None when unreadable."""
        match = _FROM_DATE.search(self.from_line)
        if not match:
            return None
        month, day, hour, minute, second, year = match.groups()
        try:
            return datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour),
                            int(minute), int(second or 0), tzinfo=UTC)
        except ValueError:
            return None


def unquote(body: bytes, *, variant: str = "mboxrd") -> bytes:
    """A message's lines as they were before the mbox writer quoted them."""
    pattern = _MBOXRD_QUOTED if variant == "mboxrd" else _MBOXO_QUOTED
    return pattern.sub(rb"\1", body)


def split_mbox(lines: Iterable[bytes], *, variant: str = "mboxrd") -> Iterator[MboxMessage]:
    """The messages of an mbox read line by line (each line with its LF).

    A message starts at a ``From `` line at the start of the file or after an
    empty line (RFC 4155 §2: every message ends with one); that empty line is
    the separator's, not the message's. Anything before the first From_ line
    is not a message and is skipped."""
    from_line: bytes | None = None
    body: list[bytes] = []
    previous_empty = True
    for line in lines:
        if line.startswith(b"From ") and previous_empty:
            if from_line is not None:
                yield _mbox_message(from_line, body, variant)
            from_line, body = line.rstrip(b"\r\n"), []
        elif from_line is not None:
            body.append(line)
        previous_empty = line in (b"\n", b"\r\n")
    if from_line is not None:
        yield _mbox_message(from_line, body, variant)


def _mbox_message(from_line: bytes, body: list[bytes], variant: str) -> MboxMessage:
    if body and body[-1] in (b"\n", b"\r\n"):
        body = body[:-1]
    return MboxMessage(from_line, unquote(b"".join(body), variant=variant))


def mbox_entry(data: bytes, internal_date: datetime, *, sender: str = "MAILER-DAEMON") -> bytes:
    """One message as an mboxrd entry: From_ line (RFC 4155 §2: UTC asctime),
    LF line ends, ``>*From `` lines quoted, an empty line after it."""
    when = internal_date.astimezone(UTC).strftime("%a %b %e %H:%M:%S %Y")
    body = _TO_QUOTE.sub(rb">\1", data.replace(b"\r\n", b"\n"))
    if not body.endswith(b"\n"):
        body += b"\n"
    return f"From {sender} {when}\n".encode() + body + b"\n"


# --- Maildir ------------------------------------------------------------------------------

KEYWORDS_FILE = "dovecot-keywords"
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def maildir_info_flags(file_name: str, keywords: Sequence[str]) -> tuple[int, list[str]]:
    """The flags and keywords of a Maildir file name's ``:2,`` info; lower-case
    letters index ``keywords`` (the folder's dovecot-keywords list)."""
    _base, sep, info = file_name.rpartition(":2,")
    if not sep:
        return 0, []
    found = [keywords[KEYWORD_LETTERS.index(c)] for c in info
             if c in KEYWORD_LETTERS and KEYWORD_LETTERS.index(c) < len(keywords)]
    return _bits(info, MAILDIR_LETTERS), list(dict.fromkeys(found))


def maildir_info(bits: int, keyword_letters: str) -> str:
    """The ``:2,`` info of a file: flag letters then keyword letters, each in
    ASCII order."""
    return ":2," + _letters(bits, MAILDIR_LETTERS) + "".join(sorted(keyword_letters))


def read_keywords_file(text: str) -> list[str]:
    """dovecot-keywords: ``<index> <keyword>`` lines; the list by index."""
    by_index: dict[int, str] = {}
    for line in text.splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and name and int(index) < len(KEYWORD_LETTERS):
            by_index[int(index)] = name
    return [by_index.get(i, "") for i in range(max(by_index, default=-1) + 1)]


def keywords_file(keywords: Sequence[str]) -> str:
    return "".join(f"{index} {name}\n" for index, name in enumerate(keywords))


def folder_from_maildir(directory: str) -> str:
    """A Maildir++ directory name (``.Lists.python``) as a folder name
    (``Lists/python``); the root is INBOX."""
    if directory in ("", "."):
        return "INBOX"
    levels = directory.removeprefix(".").split(".")
    return "/".join(imap_utf7.decode(level.encode("ascii", "replace")) for level in levels)


def maildir_from_folder(name: str) -> str:
    """The Maildir++ directory of a folder name: "" for INBOX, ``.A.B`` for
    ``A/B``. A "." inside a level, the Maildir++ separator, is written as its
    modified UTF-7 form so that it reads back as a ".", not as a level."""
    if name == "INBOX":
        return ""
    return "".join("." + imap_utf7.encode(level).decode().replace(".", "&AC4-")
                   for level in name.split("/"))
