"""Extensions beyond what imaptest's scripted suite covers, over a real socket."""

from __future__ import annotations

import pytest

from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP


@pytest.fixture
def raw(imap_port, mailbox) -> RawIMAP:
    client = RawIMAP(imap_port)
    client.login(mailbox.address, PASSWORD)
    return client


def append(raw: RawIMAP, data: bytes, date: str | None = None) -> bytes:
    when = f' "{date}"' if date else ""
    return raw.command(f"APPEND INBOX{when} {{{len(data)}+}}\r\n".encode() + data)[-1]


# --- WITHIN (RFC 5032) ----------------------------------------------------------------


def test_within_searches_by_the_age_of_the_internal_date(raw):
    assert b" WITHIN" in raw.command("CAPABILITY")[0]
    append(raw, b"Subject: old\r\n\r\nold\r\n", "01-Jan-2001 00:00:00 +0000")
    append(raw, b"Subject: new\r\n\r\nnew\r\n")
    raw.command("SELECT INBOX")
    # RFC 5032 §3: YOUNGER n is internal date within n seconds of now, OLDER the rest.
    assert raw.command("SEARCH YOUNGER 86400")[0] == b"* SEARCH 2\r\n"
    assert raw.command("UID SEARCH OLDER 86400")[0] == b"* SEARCH 1\r\n"
    assert raw.command("SEARCH OR YOUNGER 3600 OLDER 3600")[0] == b"* SEARCH 1 2\r\n"
    # The interval is a non-zero number (RFC 5032 §4).
    assert raw.command("SEARCH YOUNGER 0")[-1].split(b" ")[1] == b"BAD"
