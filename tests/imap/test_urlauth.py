"""URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524) over a real socket."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.imap.binary import binary_section
from apps.imap.parser import ParseError, parse_command
from apps.imap.urlauth import parse_auth_url
from apps.store import mime
from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP

MESSAGE = (b"From: a@example.test\r\nSubject: plan\r\nContent-Type: multipart/mixed; "
           b"boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nthe plan\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b--\r\n")
BASE = "imap://alice@example.test/INBOX;UIDVALIDITY={}/;UID=1"


@pytest.fixture
def stored(raw) -> str:  # type: ignore[no-untyped-def]
    """A message in alice's INBOX; the URL of it (without URLAUTH)."""
    raw.command(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
    line = raw.command("STATUS INBOX (UIDVALIDITY)")[0]
    return BASE.format(re.search(rb"UIDVALIDITY (\d+)", line).group(1).decode())


def authorize(raw: RawIMAP, rump: str) -> str:
    lines = raw.command(f'GENURLAUTH "{rump}" INTERNAL', tag="g")
    assert lines[-1] == b"g OK GENURLAUTH completed\r\n", lines
    url = re.fullmatch(rb'\* GENURLAUTH "(.*)"\r\n', lines[0]).group(1).decode()
    assert re.fullmatch(re.escape(rump) + ":INTERNAL:[0-9a-f]{64}", url)
    return url


def fetch(client: RawIMAP, url: str) -> bytes:
    lines = client.command(f'URLFETCH "{url}"', tag="f")
    assert lines[-1] == b"f OK URLFETCH completed\r\n"
    prefix = f'* URLFETCH "{url}" '.encode()
    assert lines[0].startswith(prefix)
    return lines[0][len(prefix):]


def test_a_user_fetches_what_they_authorized_until_resetkey(raw, stored):
    caps = raw.command("CAPABILITY")[0]
    assert b" URLAUTH " in caps and b" URLAUTH=BINARY" in caps
    url = authorize(raw, stored + ";URLAUTH=user+alice@example.test")
    assert fetch(raw, url) == b"{%d}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n"
    # A changed token, or one for another URL, fetches nothing (RFC 4467 §7).
    assert fetch(raw, url[:-1] + ("0" if url[-1] != "0" else "1")) == b"NIL\r\n"
    assert fetch(raw, url.replace(";UID=1", ";UID=2")) == b"NIL\r\n"
    # RESETKEY of the folder ends every URL of it (RFC 4467 §4).
    assert raw.command("RESETKEY INBOX", tag="r")[-1] == b"r OK RESETKEY completed\r\n"
    assert fetch(raw, url) == b"NIL\r\n"
    again = authorize(raw, stored + ";URLAUTH=user+alice@example.test")
    assert again != url and fetch(raw, again) != b"NIL\r\n"
    raw.command("RESETKEY", tag="r2")  # every folder
    assert fetch(raw, again) == b"NIL\r\n"


def test_access_decides_who_may_fetch(raw, stored, imap_port):
    make_mailbox("bob@example.test")
    bob = RawIMAP(imap_port)
    bob.login("bob@example.test", PASSWORD)
    mine = authorize(raw, stored + ";URLAUTH=user+alice@example.test")
    anyone = authorize(raw, stored + ";URLAUTH=authuser")
    for_bob = authorize(raw, stored + ";URLAUTH=user+bob")  # bob on the URL's host
    submit = authorize(raw, stored + ";URLAUTH=submit+alice@example.test")
    assert fetch(bob, mine) == b"NIL\r\n"
    assert fetch(bob, anyone).startswith(b"{%d}" % len(MESSAGE))
    assert fetch(bob, for_bob).startswith(b"{%d}" % len(MESSAGE))
    assert fetch(raw, for_bob) == b"NIL\r\n"
    assert fetch(bob, submit) == b"NIL\r\n"  # for a submission server, not a user
    # Bob cannot authorize URLs of alice's mailbox.
    assert bob.command(f'GENURLAUTH "{stored};URLAUTH=authuser" INTERNAL',
                       tag="x")[-1].startswith(b"x NO ")


def test_expiry_sections_and_binary(raw, stored):
    old = authorize(raw, stored + ";EXPIRE=2001-01-01T00:00:00Z;URLAUTH=authuser")
    assert fetch(raw, old) == b"NIL\r\n"
    part = authorize(raw, stored + "/;SECTION=2;EXPIRE=2999-01-01T00:00:00Z;URLAUTH=authuser")
    assert fetch(raw, part) == b"{8}\r\nAAECAw==\r\n"
    # RFC 5524: BINARY undoes the transfer encoding, BODYPARTSTRUCTURE tells the
    # part; with BINARY, the size of the octets sent (as Dovecot does).
    lines = raw.command(f'URLFETCH ("{part}" BODYPARTSTRUCTURE BINARY)', tag="b")
    assert lines[0] == (f'* URLFETCH "{part}" (BODYPARTSTRUCTURE ("APPLICATION" '
                        f'"OCTET-STREAM" NIL NIL NIL "BASE64" 4 NIL NIL NIL NIL) '
                        f"BINARY ~{{4}}\r\n").encode() + b"\x00\x01\x02\x03)\r\n"
    assert raw.command(f'URLFETCH ("{part}" BODYPARTSTRUCTURE)', tag="b2")[0] == (
        f'* URLFETCH "{part}" (BODYPARTSTRUCTURE ("APPLICATION" "OCTET-STREAM" NIL NIL '
        f'NIL "BASE64" 8 NIL NIL NIL NIL))\r\n').encode()
    lines = raw.command(f'URLFETCH ("{part}" BODY) "{old}"', tag="c")
    assert lines[0] == f'* URLFETCH "{part}" (BODY {{8}}\r\nAAECAw==) "{old}" NIL\r\n'.encode()
    # BINARY of the whole message: each encoded part decoded and said to be binary.
    whole = authorize(raw, stored + ";URLAUTH=authuser")
    lines = raw.command(f'URLFETCH ("{whole}" BINARY)', tag="d")
    binary = MESSAGE.replace(b"base64\r\n\r\nAAECAw==", b"binary\r\n\r\n\x00\x01\x02\x03")
    assert lines[0] == f'* URLFETCH "{whole}" (BINARY ~{{{len(binary)}}}\r\n'.encode() + \
        binary + b")\r\n"
    first = authorize(raw, stored + "/;SECTION=1/;PARTIAL=4.4;URLAUTH=authuser")
    assert fetch(raw, first) == b"{4}\r\nplan\r\n"


def test_refusals(raw, stored):
    rump = stored + ";URLAUTH=authuser"
    assert raw.command(f'GENURLAUTH "{rump}" XOAUTH', tag="a")[-1].startswith(b"a NO ")
    url = authorize(raw, rump)
    assert raw.command(f'GENURLAUTH "{url}" INTERNAL', tag="b")[-1].startswith(b"b BAD")
    assert raw.command('GENURLAUTH "imap://x/INBOX" INTERNAL', tag="c")[-1].startswith(b"c BAD")
    nowhere = rump.replace("/INBOX;", "/Nowhere;")
    assert raw.command(f'GENURLAUTH "{nowhere}" INTERNAL', tag="d")[-1].startswith(
        b"d NO [NONEXISTENT]")
    assert raw.command("RESETKEY Nowhere", tag="e")[-1].startswith(b"e NO [NONEXISTENT]")
    assert fetch(raw, "imap://nonsense") == b"NIL\r\n"


def test_urlauth_commands_parse():
    assert parse_command(b'a GENURLAUTH "u1" internal "u2" INTERNAL\r\n').args == {
        "urls": [(b"u1", "INTERNAL"), (b"u2", "INTERNAL")]}
    assert parse_command(b'a URLFETCH "u1" ("u2" binary BODYPARTSTRUCTURE)\r\n').args == {
        "urls": [(b"u1", None), (b"u2", ("BINARY", "BODYPARTSTRUCTURE"))]}
    assert parse_command(b"a RESETKEY\r\n").args == {"mailbox": None, "mechanisms": []}
    assert parse_command(b"a RESETKEY inbox INTERNAL\r\n").args == {
        "mailbox": "inbox", "mechanisms": ["INTERNAL"]}
    for bad in (b"a GENURLAUTH\r\n", b'a GENURLAUTH "u"\r\n', b"a URLFETCH\r\n",
                b'a URLFETCH ("u" BINARY BODY)\r\n', b'a URLFETCH ("u" OTHER)\r\n'):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_auth_urls_parse():
    url = parse_auth_url(b"imap://joe%40x.test@mail.x.test/Sent%20Items/;UID=20/;SECTION=1.2"
                         b";EXPIRE=2030-01-02T03:04:05%2B01:00;URLAUTH=user+ann:internal:"
                         + b"ab" * 16)
    assert url.owner == "joe@x.test" and url.access_user == "ann@mail.x.test"
    assert url.message.mailbox == "Sent Items" and url.message.uid == 20
    assert url.message.section.part == (1, 2) and url.expire.year == 2030
    assert url.mechanism == "INTERNAL" and url.token == "ab" * 16
    assert url.rump.endswith(b";URLAUTH=user+ann")
    for bad in (b"imap://a@b/INBOX/;UID=1", b"imap://a@b/INBOX/;UID=1;URLAUTH=other",
                b"imap://a@b/INBOX/;UID=1;EXPIRE=soon;URLAUTH=authuser",
                b"imap://a@b/INBOX/;UID=1;EXPIRE=2030-01-01T00:00:00;URLAUTH=authuser",
                b"/INBOX/;UID=1;URLAUTH=authuser"):
        with pytest.raises(ValueError):
            parse_auth_url(bad)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_refused(data):
    try:
        url = parse_auth_url(b"imap://a@b/INBOX/;UID=1;URLAUTH=" + data)
    except ValueError:
        return
    assert url.rump.startswith(b"imap://a@b/INBOX/;UID=1;URLAUTH=")
    assert url.access in ("anonymous", "authuser", "user", "submit")


def test_binary_of_an_encapsulated_message_decodes_its_parts():
    inner = (b"Subject: sub\r\nContent-Type: multipart/alternative; boundary=s\r\n\r\n"
             b"--s\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             b"aGVs\r\nbG8=\r\n\r\n--s\r\nContent-Type: text/plain\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n--s--\r\n")
    raw = (b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n")
    structure = mime.analyze(raw).bodystructure
    expected = inner.replace(b"base64\r\n\r\naGVs\r\nbG8=\r\n", b"binary\r\n\r\nhello") \
        .replace(b"quoted-printable\r\n\r\na=3Db", b"binary\r\n\r\na=b")
    assert binary_section(raw, structure, [1]) == expected
    assert binary_section(raw, structure, [1, 1]) == b"hello"
    assert binary_section(raw, structure, [9]) == b""


def test_bodypartstructure_of_binary_text_counts_line_breaks(raw):
    """imaptest's urlauth-binary: a base64 text part decoded to "hello world"
    (no line break before its boundary) is 11 octets and 0 lines, as Dovecot
    says; encoded, its three broken lines are 3."""
    message = (b"From: a@example.test\r\nContent-Type: multipart/alternative; boundary=s\r\n"
               b"\r\n--s\r\nContent-Type: text/x-myown; charset=us-ascii\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8gd29y\r\nbGQ=\r\n\r\n"
               b"--s--\r\n")
    raw.command(b"APPEND INBOX {%d+}\r\n" % len(message) + message)
    line = raw.command("STATUS INBOX (UIDVALIDITY)")[0]
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", line).group(1).decode()
    part = authorize(raw, BASE.format(uidvalidity) + "/;SECTION=1;URLAUTH=authuser")
    structure = ('("TEXT" "X-MYOWN" ("CHARSET" "us-ascii") NIL NIL "BASE64" {} {} '
                 'NIL NIL NIL NIL)')
    assert raw.command(f'URLFETCH ("{part}" BODYPARTSTRUCTURE)', tag="e")[0] == (
        f'* URLFETCH "{part}" (BODYPARTSTRUCTURE {structure.format(22, 3)})\r\n').encode()
    assert raw.command(f'URLFETCH ("{part}" BODYPARTSTRUCTURE BINARY)', tag="b")[0] == (
        f'* URLFETCH "{part}" (BODYPARTSTRUCTURE {structure.format(11, 0)} '
        f'BINARY {{11}}\r\nhello world)\r\n').encode()
