"""What Dovecot's imaptest conformance suite checks, as regression tests over a
real socket (bench/imaptest.py runs the suite itself): each test names the
imaptest group it stands for."""

from __future__ import annotations

import quopri
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.imap.binary import encode_binary_parts
from apps.imap.parser import ParseError, parse_command, parse_imap_url
from apps.store import mime
from tests.factories import PASSWORD, forget_text_index
from tests.imap.helpers import RawIMAP


def append(raw: RawIMAP, data: bytes, folder: str = "INBOX", binary: bool = False) -> bytes:
    marker = b"~{%d+}" if binary else b"{%d+}"
    return raw.command(b"APPEND " + folder.encode() + b" " + marker % len(data) + b"\r\n"
                       + data)[-1]


def untagged(lines: list[bytes], prefix: bytes) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* " + prefix)]


# --- atoms -------------------------------------------------------------------------


def test_a_tilde_starts_an_atom_not_a_literal8(raw):
    # RFC 3501 §9: "~" is an ATOM-CHAR; only "~{" opens a literal8 (RFC 3516 §4.1).
    assert raw.command('LIST "" ~foo')[-1].startswith(b"t2 OK")
    assert raw.command("SELECT ~foo")[-1].startswith(b"t3 NO")
    # A literal8 where an astring belongs is BAD, and the session goes on.
    assert raw.command(b"SELECT ~{3+}\r\nabc")[-1].startswith(b"t4 BAD")
    assert raw.command("NOOP")[-1].startswith(b"t5 OK")


def test_tilde_atoms_parse():
    assert parse_command(b'a LIST "" ~foo\r\n').args["patterns"] == ["~foo"]
    assert parse_command(b"a SELECT ~foo\r\n").args["mailbox"] == "~foo"
    with pytest.raises(ParseError):
        parse_command(b"a SELECT ~{3}\r\nabc\r\n")


# --- search-date -------------------------------------------------------------------


@given(st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                        "Oct", "Nov", "Dec"]), st.data())
def test_month_names_are_case_insensitive(month, data):
    # RFC 3501 §9: date-month is case-insensitive, like every keyword.
    spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in month)
    canonical = parse_command(f"a SEARCH SENTBEFORE 24-{month}-2007\r\n".encode())
    assert parse_command(f"a SEARCH SENTBEFORE 24-{spelled}-2007\r\n".encode()) == canonical


def test_search_with_a_lower_case_month(raw):
    append(raw, b"Date: Sat, 24 Mar 2007 23:00:00 +0200\r\nSubject: x\r\n\r\nbody\r\n")
    raw.command("SELECT INBOX")
    lines = raw.command("SEARCH SENTBEFORE 25-mar-2007")
    assert lines[0] == b"* SEARCH 1\r\n" and lines[-1].startswith(b"t4 OK")
    assert raw.command("SEARCH SENTBEFORE 24-MAR-2007")[0] == b"* SEARCH\r\n"


# --- listext, subscribe ---------------------------------------------------------------


@pytest.mark.parametrize("command", [
    'LIST (imaptest) "" ""', 'LIST (RECURSIVEMATCH) "" ""',
    'LIST (RECURSIVEMATCH REMOTE) "" "%"', 'LIST "" "" RETURN (imaptest)',
])
def test_list_extended_option_errors_are_bad(raw, command):
    # RFC 5258 §3: unknown options are BAD; RECURSIVEMATCH alone (or with REMOTE) too.
    assert raw.command(command)[-1].startswith(b"t2 BAD")


def make_tree(raw: RawIMAP, created: list[str], subscribed: list[str]) -> None:
    for name in created:
        assert raw.command(f"CREATE {name}")[-1].split(b" ")[1] == b"OK", name
    for name in subscribed:
        assert raw.command(f"SUBSCRIBE {name}")[-1].split(b" ")[1] == b"OK", name


def test_list_subscribed_recursivematch_and_childinfo(raw):
    make_tree(raw, ["t/a", "t/b/a", "t/c", "t/d/d", "t/e/e", "t/e/f"],
              ["t/a", "t/b/a", "t/d/d", "t/e/e", "t/e/f"])
    # CREATE subscribes nothing: t/b and t/c are not subscribed.
    lines = raw.command('LIST (SUBSCRIBED RECURSIVEMATCH) "" t/b% RETURN (CHILDREN)')
    assert untagged(lines, b"LIST") == [
        b'* LIST (\\HasChildren) "/" t/b ("CHILDINFO" ("SUBSCRIBED"))\r\n']
    # RFC 5258 §3.5: CHILDINFO only for descendants that the patterns do not list.
    lines = raw.command('LIST (SUBSCRIBED RECURSIVEMATCH) "" t*d')
    assert untagged(lines, b"LIST") == [b'* LIST (\\HasNoChildren \\Subscribed) "/" t/d/d\r\n']
    lines = raw.command('LIST (SUBSCRIBED RECURSIVEMATCH) "" t*e')
    assert untagged(lines, b"LIST") == [
        b'* LIST (\\HasChildren) "/" t/e ("CHILDINFO" ("SUBSCRIBED"))\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/e/e\r\n']
    lines = raw.command('LIST "" t/% RETURN (CHILDREN SUBSCRIBED)')
    assert untagged(lines, b"LIST") == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/a\r\n',
        b'* LIST (\\HasChildren) "/" t/b\r\n',
        b'* LIST (\\HasNoChildren) "/" t/c\r\n',
        b'* LIST (\\HasChildren) "/" t/d\r\n',
        b'* LIST (\\HasChildren) "/" t/e\r\n']


def test_lsub_percent_shows_unsubscribed_parents_as_noselect(raw, imap_port, mailbox):
    make_tree(raw, ["m/", "m/x", "m/y/", "m/z/", "m/y/x", "m/z/z"], ["m/x", "m/y/x", "m/z/z"])
    other = RawIMAP(imap_port)
    other.login(mailbox.address, PASSWORD)
    # RFC 3501 §6.3.9: "%" names a level with subscribed children as \Noselect.
    assert untagged(other.command('LSUB "" m/%'), b"LSUB") == [
        b'* LSUB () "/" m/x\r\n', b'* LSUB (\\Noselect) "/" m/y\r\n',
        b'* LSUB (\\Noselect) "/" m/z\r\n']
    raw.command("UNSUBSCRIBE m/z/z")
    assert untagged(other.command('LSUB "" m/%'), b"LSUB") == [
        b'* LSUB () "/" m/x\r\n', b'* LSUB (\\Noselect) "/" m/y\r\n']


def test_a_deleted_folder_stays_subscribed(raw):
    # RFC 3501 §6.3.6: the server must not remove a name from the subscription
    # list because its mailbox no longer exists; RFC 5258 §3.1 \NonExistent.
    make_tree(raw, ["s/gone", "s/kept"], ["s/gone", "s/kept"])
    assert raw.command("DELETE s/gone")[-1].split(b" ")[1] == b"OK"
    assert untagged(raw.command('LIST (SUBSCRIBED) "" s/*'), b"LIST") == [
        b'* LIST (\\NonExistent \\Subscribed) "/" s/gone\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" s/kept\r\n']
    assert untagged(raw.command('LSUB "" s/*'), b"LSUB") == [
        b'* LSUB (\\Noselect) "/" s/gone\r\n', b'* LSUB () "/" s/kept\r\n']
    # A plain LIST shows only folders that exist.
    assert untagged(raw.command('LIST "" s/*'), b"LIST") == [
        b'* LIST (\\HasNoChildren) "/" s/kept\r\n']
    # Re-created, the folder is subscribed without a new SUBSCRIBE.
    raw.command("CREATE s/gone")
    assert untagged(raw.command('LSUB "" s/gone'), b"LSUB") == [b'* LSUB () "/" s/gone\r\n']
    raw.command("DELETE s/gone")
    assert raw.command("UNSUBSCRIBE s/gone")[-1].split(b" ")[1] == b"OK"
    assert untagged(raw.command('LSUB "" s/*'), b"LSUB") == [b'* LSUB () "/" s/kept\r\n']
    assert raw.command("UNSUBSCRIBE s/gone")[-1].split(b" ")[1] == b"NO"


def test_rename_moves_the_subscriptions_of_the_tree(raw):
    # RFC 3501 §6.3.5 renames the inferior folders too; their subscriptions
    # follow them (as Dovecot does), and a bystander's stays.
    make_tree(raw, ["r/a/b", "r/ab"], ["r/a", "r/a/b", "r/ab"])
    assert raw.command("RENAME r/a n/a")[-1].split(b" ")[1] == b"OK"
    assert untagged(raw.command('LSUB "" *'), b"LSUB")[-3:] == [
        b'* LSUB () "/" n/a\r\n', b'* LSUB () "/" n/a/b\r\n', b'* LSUB () "/" r/ab\r\n']


# --- select ----------------------------------------------------------------------------


def test_examine_shows_recent_without_taking_it(raw):
    append(raw, b"Subject: 1\r\n\r\none\r\n")
    append(raw, b"Subject: 2\r\n\r\ntwo\r\n")
    # RFC 3501 §6.3.2: read-only access leaves \Recent for the next SELECT.
    assert b"* 2 RECENT\r\n" in raw.command("EXAMINE INBOX")
    raw.command("CLOSE")
    assert raw.command("STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 2)\r\n"
    assert b"* 2 RECENT\r\n" in raw.command("SELECT INBOX")
    raw.command("CLOSE")
    assert raw.command("STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 0)\r\n"


# --- search-addresses ---------------------------------------------------------------------


def test_search_from_finds_an_address_written_with_comments(raw):
    append(raw, b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: x@y.org\r\n\r\nb\r\n")
    append(raw, b"From: RealFrom <user-from@domain.org>\r\n\r\nb\r\n")
    append(raw, b"From: other@domain.org\r\n\r\nb\r\n")
    raw.command("SELECT INBOX")
    assert raw.command("SEARCH FROM user-from@domain.org")[0] == b"* SEARCH 1 2\r\n"
    # Messages the full-text index does not know (yet) are compared the same way.
    forget_text_index()
    assert raw.command("SEARCH FROM user-from@domain.org")[0] == b"* SEARCH 1 2\r\n"
    assert raw.command("SEARCH HEADER FROM user-from@domain.org")[0] == b"* SEARCH 1 2\r\n"


# --- sort-addresses, thread ------------------------------------------------------------------


def test_sort_by_cc_uses_a_group_name(raw):
    append(raw, b"Cc: user2@domain2.org (foo bar)\r\n\r\n1\r\n")
    append(raw, b"Cc: user2: blah@domain1.org;\r\n\r\n2\r\n")
    append(raw, b"Cc: user1@domain1.org\r\n\r\n3\r\n")
    raw.command("SELECT INBOX")
    # RFC 5256 §3 (as Dovecot): the first address's mailbox, a group's name included.
    assert raw.command("SORT (CC) US-ASCII ALL")[0] == b"* SORT 3 1 2\r\n"
    assert raw.command("SORT (REVERSE CC) US-ASCII ALL")[0] == b"* SORT 1 2 3\r\n"


def test_thread_references_breaks_a_loop_by_dropping_the_old_parent(raw):
    append(raw, b"Message-ID: <a@b>\r\nDate: Fri, 22 Feb 2008 17:06:23 +0000\r\n\r\nbody\r\n")
    append(raw, b"Message-Id: <b@b>\r\nReferences: <a@b> <c@b>\r\n"
                b"Date: Fri, 22 Feb 2008 15:06:23 +0000\r\n\r\nbody\r\n")
    append(raw, b"Message-Id: <c@b>\r\nReferences: <b@b>\r\n"
                b"Date: Fri, 22 Feb 2008 16:06:23 +0000\r\n\r\nbody\r\n")
    raw.command("SELECT INBOX")
    # RFC 5256 §3 step 1.B: <c> had <a> as parent from 2's References; its own
    # References name <b>, a child of <c>: the old link goes, the loop is not made.
    assert raw.command("THREAD REFERENCES US-ASCII ALL")[0] == b"* THREAD (3 2)(1)\r\n"


# --- esearch-condstore ---------------------------------------------------------------------


def test_esearch_modseq_is_that_of_the_returned_messages(raw):
    for number in range(4):
        append(raw, b"Subject: %d\r\n\r\nbody\r\n" % number)
    raw.command("SELECT INBOX")
    lines = raw.command("FETCH 1 MODSEQ")
    # RFC 7162 §3.1: the first CONDSTORE-enabling command tells HIGHESTMODSEQ.
    assert re.match(rb"\* OK \[HIGHESTMODSEQ \d+\]", lines[0])
    modseqs = {}
    for number in (1, 3, 2, 4):
        line = raw.command(f"STORE {number} +FLAGS (\\Seen)")[0]
        modseqs[number] = int(re.search(rb"MODSEQ \((\d+)\)", line).group(1))
    search = 'SEARCH RETURN ({}) 1:3 MODSEQ "/flags/\\\\seen" all 1'
    # RFC 4731 §3.2 / RFC 7162 §3.1.5: MIN or MAX alone: the MODSEQ of that message.
    assert raw.command(search.format("MIN"))[0].endswith(
        b"MIN 1 MODSEQ %d\r\n" % modseqs[1])
    assert raw.command(search.format("MAX"))[0].endswith(
        b"MAX 3 MODSEQ %d\r\n" % modseqs[3])
    assert raw.command(search.format(""))[0].endswith(b"ALL 1:3 MODSEQ %d\r\n" % modseqs[2])
    assert raw.command(search.format("MIN MAX").replace("1:3", "2:3"))[0].endswith(
        b"MIN 2 MAX 3 MODSEQ %d\r\n" % modseqs[2])


# --- fetch-binary-mime-qp, append-binary -------------------------------------------------------

QP_PART = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\n"
           b"foo =\r\n=62\r\nfoo  \r\nbar=\r\n\r\nfoo_bar\r\n")
QP_DECODED = (b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\n"
              b"foo_bar\r\n")


def test_binary_of_a_quoted_printable_part(raw):
    message = (b'Content-Type: multipart/mixed; boundary="foo bar"\r\n\r\n--foo bar\r\n'
               b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n"
               b"\r\n" + QP_PART + b"\r\n--foo bar--\r\n")
    append(raw, message)
    raw.command("SELECT INBOX")
    # RFC 2045 §6.7: trailing whitespace is padding; "=" (then padding) is a soft break.
    assert raw.command("FETCH 1 (BINARY.SIZE[1])")[0] == \
        b"* 1 FETCH (BINARY.SIZE[1] %d)\r\n" % len(QP_DECODED)
    assert raw.command("FETCH 1 (BINARY.PEEK[1])")[0] == \
        b"* 1 FETCH (BINARY[1] {%d}\r\n%s)\r\n" % (len(QP_DECODED), QP_DECODED)
    assert raw.command("FETCH 1 (BINARY.PEEK[1]<15.10>)")[0] == \
        b"* 1 FETCH (BINARY[1]<15> {10}\r\n%s)\r\n" % QP_DECODED[15:25]


@given(st.binary(max_size=200))
def test_quoted_printable_of_any_bytes_decodes_back(data):
    lines = data.replace(b"\r", b"").split(b"\n")
    canonical = b"\r\n".join(lines)
    encoded = b"\r\n".join(quopri.encodestring(line, quotetabs=True).replace(b"\n", b"\r\n")
                           for line in lines)
    assert mime.decode_body(encoded, "quoted-printable") == canonical


def test_append_of_binary_content_is_served_as_base64_and_as_binary(raw):
    part = b"\x00-\xe4\r\n\r\n"
    message = (b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
               b"Content-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + part)
    assert b"OK [APPENDUID" in append(raw, message, binary=True)
    raw.command("SELECT INBOX")
    # RFC 3501 §4.3: no NUL in a literal. RFC 3516 §6: BODY[] follows BODYSTRUCTURE,
    # which now says base64; BINARY[] still gives the octets appended.
    body = raw.command("FETCH 1 (BODY.PEEK[1] BODYSTRUCTURE)")[0]
    assert b"\x00" not in body and b'"BASE64"' in body and b"AC3kDQoNCg==" in body
    assert raw.command("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")[0] == \
        b"* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n" + part + b")\r\n"


def test_encode_binary_parts_leaves_other_parts_and_messages_alone():
    text = b"From: a@b\r\nSubject: plain\r\n\r\nno nul here\r\n"
    assert encode_binary_parts(text) is text
    multipart = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
                 b"Content-Type: text/plain\r\n\r\nhi\r\n--x\r\nContent-Type: application/x\r\n"
                 b"Content-Transfer-Encoding: BINARY\r\n\r\n\x00\x01\r\n--x--\r\n")
    assert encode_binary_parts(multipart) == multipart.replace(
        b"BINARY\r\n\r\n\x00\x01", b"base64\r\n\r\nAAE=")


# --- esort, sort-display-from, sort-display-to ----------------------------------------------


def test_esort_answers_in_esearch_form_in_sorted_order(raw):
    for size in (30, 10, 20):
        append(raw, b"Subject: s\r\n\r\n" + b"x" * size)
    raw.command("SELECT INBOX")
    assert b" ESORT" in raw.command("CAPABILITY")[0]
    # RFC 5267 §3.1: MIN/MAX are the first/last sorted; ALL keeps the sort order.
    assert raw.command("SORT RETURN (MIN MAX COUNT) (SIZE) US-ASCII ALL")[0] == \
        b'* ESEARCH (TAG "t7") MIN 2 MAX 1 COUNT 3\r\n'
    assert raw.command("SORT RETURN () (REVERSE ARRIVAL) US-ASCII ALL")[0] == \
        b'* ESEARCH (TAG "t8") ALL 3,2,1\r\n'
    assert raw.command("UID SORT RETURN (ALL) (SIZE) US-ASCII ALL")[0] == \
        b'* ESEARCH (TAG "t9") UID ALL 2:3,1\r\n'
    # RFC 5267 §4.4 (CONTEXT=SORT): PARTIAL is a range of the sorted result.
    assert raw.command("SORT RETURN (PARTIAL 1:2) (SIZE) US-ASCII ALL")[0] == \
        b'* ESEARCH (TAG "t10") PARTIAL (1:2 2:3)\r\n'


def test_sort_by_display_name(raw):
    for sender in (b"foo bar <a@b.c>", b"b@c.d", b"d", b"=?iso-8859-1?q?foo_aar?= <e@f.g>",
                   b"=?iso-8859-1?q?foo_car?= <f@g.h>"):
        append(raw, b"From: " + sender + b"\r\nTo: " + sender + b"\r\n\r\nbody\r\n")
    raw.command("SELECT INBOX")
    # RFC 5957 §3: the decoded display name, else the address.
    assert raw.command("SORT (DISPLAYFROM) US-ASCII ALL")[0] == b"* SORT 2 3 4 1 5\r\n"
    assert raw.command("SORT (REVERSE DISPLAYTO) US-ASCII ALL")[0] == b"* SORT 5 1 4 3 2\r\n"


# --- catenate -----------------------------------------------------------------------------------


def test_append_catenate_joins_text_and_parts_of_stored_messages(raw):
    stored = b"From: foo@example.com\r\n\r\nHello world body\r\n"
    append(raw, stored)
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", b"".join(raw.command("SELECT INBOX")))[1]
    raw.command("CREATE Out")
    assert b" CATENATE" in raw.command("CAPABILITY")[0]
    line = raw.command(b'APPEND Out (\\Seen) CATENATE (URL "/INBOX;UIDVALIDITY=' + uidvalidity
                       + b'/;UID=1/;SECTION=HEADER" TEXT {7+}\r\nbody1\r\n)')[-1]
    assert b"OK [APPENDUID" in line
    # RFC 4469 §6: a URL naming nothing is NO [BADURL url], and nothing is stored.
    line = raw.command(b'APPEND Out CATENATE (TEXT {4+}\r\nx: 1 URL "/INBOX;UIDVALIDITY=1'
                       b'/;UID=1/;SECTION=HEADER")')[-1]
    assert b"NO [BADURL /INBOX;UIDVALIDITY=1/;UID=1/;SECTION=HEADER]" in line
    line = raw.command(b'APPEND Nowhere CATENATE (URL "/INBOX/;UID=9")')[-1]
    assert b"NO [TRYCREATE]" in line
    line = raw.command(b'APPEND Out CATENATE (TEXT {19+}\r\nSubject: joined\r\n\r\n '
                       b'URL "/INBOX/;UID=1/;SECTION=TEXT" URL "/INBOX/;UID=1/;PARTIAL=6.3")')[-1]
    assert b"OK [APPENDUID" in line
    raw.command("SELECT Out")
    first = b"From: foo@example.com\r\n\r\nbody1\r\n"
    second = b"Subject: joined\r\n\r\nHello world body\r\nfoo"
    assert raw.command("FETCH 1:* BODY.PEEK[]")[:-1] == [
        b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(first), first),
        b"* 2 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(second), second)]


@pytest.mark.parametrize(("url", "expected"), [
    (b"/INBOX/;UID=3", ("INBOX", None, 3, "", None)),
    (b"/a%20b%C3%A9;UIDVALIDITY=7/;uid=2/;section=1.MIME/;partial=5.10",
     ("a b\u00e9", 7, 2, "1.MIME", (5, 10))),
    (b"imap://joe@example.com/Sent/;UID=1/;SECTION=header.fields%20(subject)",
     ("Sent", None, 1, "HEADER.FIELDS (subject)", None)),
])
def test_imap_urls_parse(url, expected):
    parsed = parse_imap_url(url)
    assert (parsed.mailbox, parsed.uidvalidity, parsed.uid, parsed.section.label(),
            parsed.partial) == expected


@pytest.mark.parametrize(("url", "user"), [
    (b"/INBOX/;UID=3", None),
    (b"imap://example.com/INBOX/;UID=3", None),
    (b"imap://joe@example.com/Sent/;UID=1", "joe"),
    (b"imap://zed%40theirs.example;AUTH=*@example.com:143/INBOX/;UID=1", "zed@theirs.example"),
])
def test_imap_urls_name_their_user(url, user):
    # RFC 5092 §3: iserver = [iuserinfo "@"] host [":" port]
    assert parse_imap_url(url).user == user


@given(st.binary(max_size=60))
def test_anything_else_is_not_an_imap_url(data):
    url = b"/INBOX/;UID=" + data
    try:
        parsed = parse_imap_url(url)
    except ValueError:
        return
    assert parsed.mailbox == "INBOX" and parsed.uid == int(re.match(rb"\d+", data)[0])


def test_sent_dates_are_the_days_written_in_the_date_header(raw):
    for written in (b"Sat, 24 Mar 2007 23:00:00 +0200", b"Sun, 25 Mar 2007 00:00:00 +0200",
                    b"Mon, 26 Mar 2007 00:00:00 +0300"):
        append(raw, b"Date: " + written + b"\r\n\r\nbody\r\n")
    raw.command("SELECT INBOX")
    # RFC 3501 §6.4.4: the Date: header's day, time and timezone disregarded
    # (in UTC the second message is still 24 March).
    assert raw.command("SEARCH SENTON 25-Mar-2007")[0] == b"* SEARCH 2\r\n"
    assert raw.command("SEARCH SENTBEFORE 25-Mar-2007")[0] == b"* SEARCH 1\r\n"
    assert raw.command("SEARCH SENTSINCE 26-Mar-2007")[0] == b"* SEARCH 3\r\n"


def test_a_list_pattern_that_is_not_modified_utf7_matches_nothing(raw):
    lines = raw.command("LIST \"\" !#$$&'+,-.0123456789:;<=>?@^_`|[}%*")
    assert lines == [lines[-1]] and lines[-1].startswith(b"t2 OK")
