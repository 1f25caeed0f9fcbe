"""Extensions beyond what imaptest's scripted suite covers, over a real socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.imap.parser import ParseError, parse_command
from mailhost.errors import Invalid
from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP


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


# --- METADATA (RFC 5464) --------------------------------------------------------------


def test_metadata_of_the_server_and_of_a_folder(raw, imap_port, mailbox):
    assert b" METADATA" in raw.command("CAPABILITY")[0]
    assert raw.command('SETMETADATA "" (/private/comment "my server")')[-1] == \
        b"t3 OK SETMETADATA completed\r\n"
    lines = raw.command("SETMETADATA INBOX (/shared/Comment {5+}\r\nhello "
                        "/private/vendor/x/a \"1\" /private/vendor/x/a/b \"2\")")
    assert lines[-1].startswith(b"t4 OK")
    # Another session sees them; names are case-insensitive (RFC 5464 §3.2).
    other = RawIMAP(imap_port)
    other.login(mailbox.address, PASSWORD)
    assert other.command('GETMETADATA "" /private/comment')[0] == \
        b'* METADATA "" (/private/comment "my server")\r\n'
    assert other.command("GETMETADATA INBOX (/shared/COMMENT /private/nothing)")[0] == \
        b'* METADATA INBOX (/shared/comment "hello")\r\n'
    # RFC 5464 §4.2.2 DEPTH: 1 adds the children, infinity every descendant.
    assert other.command("GETMETADATA (DEPTH 1) INBOX /private/vendor/x")[0] == \
        b'* METADATA INBOX (/private/vendor/x/a "1")\r\n'
    assert other.command("GETMETADATA (DEPTH infinity) INBOX /private/vendor")[0] == \
        b'* METADATA INBOX (/private/vendor/x/a "1" /private/vendor/x/a/b "2")\r\n'
    # RFC 5464 §4.2.1 MAXSIZE: longer values are left out and their size told.
    lines = other.command("GETMETADATA (MAXSIZE 3) INBOX (/shared/comment /private/vendor/x/a)")
    assert lines == [b'* METADATA INBOX (/private/vendor/x/a "1")\r\n',
                     b"t6 OK [METADATA LONGENTRIES 5] GETMETADATA completed\r\n"]
    # NIL removes; nothing left means no METADATA response.
    assert raw.command("SETMETADATA INBOX (/shared/comment NIL)")[-1].startswith(b"t5 OK")
    assert other.command("GETMETADATA INBOX /shared/comment") == [
        b"t7 OK GETMETADATA completed\r\n"]


def test_metadata_follows_its_folder(raw):
    raw.command("CREATE Notes")
    raw.command('SETMETADATA Notes (/private/comment "kept")')
    raw.command("RENAME Notes Renamed")
    assert raw.command("GETMETADATA Renamed /private/comment")[0] == \
        b'* METADATA Renamed (/private/comment "kept")\r\n'
    raw.command("DELETE Renamed")
    raw.command("CREATE Renamed")
    lines = raw.command("GETMETADATA Renamed /private/comment")  # a new folder: nothing
    assert len(lines) == 1 and lines[0].split(b" ")[1] == b"OK"
    assert raw.command("GETMETADATA Nowhere /private/comment")[0].split(b" ", 2)[1:] == [
        b"NO", b"[NONEXISTENT] no folder named Nowhere\r\n"]


def test_metadata_binary_values_and_errors(raw):
    value = b"a\x00b"
    assert raw.command(b"SETMETADATA INBOX (/private/blob ~{3}\r\n" + value + b")")[-1] \
        .startswith(b"t2 OK")
    assert raw.command("GETMETADATA INBOX /private/blob")[0] == \
        b"* METADATA INBOX (/private/blob ~{3}\r\na\x00b)\r\n"
    # RFC 5464 §3.2: entry names live under /private or /shared, without wildcards.
    for bad in ("/other/x", "/private/a*", "/private//a", "/private/a/", "private/a"):
        assert raw.command(f'SETMETADATA INBOX ({bad} "x")')[-1].split(b" ")[1] == b"BAD"
    big = b"x" * (64 * 1024 + 1)
    lines = raw.command(b"SETMETADATA INBOX (/private/big {%d+}\r\n" % len(big) + big + b")")
    assert lines[-1].startswith(b"t9 NO [METADATA MAXSIZE 65536]")


def test_metadata_has_a_bounded_number_of_entries(raw, monkeypatch):
    from apps.store import metadata

    monkeypatch.setattr(metadata, "MAX_ENTRIES", 2)
    raw.command('SETMETADATA INBOX (/private/a "1" /private/b "2")')
    lines = raw.command('SETMETADATA INBOX (/private/c "3")')
    assert lines[-1].startswith(b"t3 NO [METADATA TOOMANY]")
    # Replacing a value adds no entry.
    assert raw.command('SETMETADATA INBOX (/private/a "one")')[-1].startswith(b"t4 OK")


@given(st.text(max_size=40))
def test_entry_names_are_validated_by_a_pure_function(name):
    from apps.store.metadata import validate_entry

    try:
        canonical = validate_entry(name)
    except Invalid:
        return
    assert canonical == name.lower()
    assert canonical.split("/")[1] in ("private", "shared") and "//" not in canonical
    assert not canonical.endswith("/") and "*" not in canonical and "%" not in canonical


def test_metadata_commands_parse():
    args = parse_command(b"a GETMETADATA (MAXSIZE 10 DEPTH infinity) INBOX (/a /b)\r\n").args
    assert args == {"maxsize": 10, "depth": "infinity", "mailbox": "INBOX",
                    "entries": ["/a", "/b"]}
    args = parse_command(b"a SETMETADATA \"\" (/a \"x\" /b NIL /c ~{2}\r\n\x00b)\r\n").args
    assert args == {"mailbox": "", "values": [("/a", b"x"), ("/b", None), ("/c", b"\x00b")]}
    for bad in (b"a GETMETADATA (DEPTH 2) INBOX /a\r\n", b"a GETMETADATA INBOX ()\r\n",
                b"a SETMETADATA INBOX ()\r\n", b"a SETMETADATA INBOX (/a)\r\n"):
        with pytest.raises(ParseError):
            parse_command(bad)
