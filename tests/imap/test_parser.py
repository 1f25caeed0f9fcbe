"""The IMAP parser and formatters on plain byte strings (no database, no socket)."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.imap import ordering
from apps.imap import responses as fmt
from apps.imap.parser import (
    CommandFramer,
    Continue,
    FetchAtt,
    LimitError,
    ParseError,
    SearchKey,
    Section,
    SeqSet,
    TooBig,
    parse_command,
)


def frame(data: bytes, *, max_line: int = 1000, max_literal: int = 1000) -> list:
    framer = CommandFramer(max_line=max_line, max_literal=max_literal)
    framer.feed(data)
    out = []
    while (item := framer.next()) is not None:
        out.append(item)
    return out


# --- framing ---------------------------------------------------------------------


def test_framer_splits_commands_and_waits_for_the_rest_of_a_line():
    framer = CommandFramer(max_line=100, max_literal=100)
    framer.feed(b"a1 NOOP\r\na2 CAPA")
    assert framer.next() == b"a1 NOOP\r\n"
    assert framer.next() is None
    framer.feed(b"BILITY\r\n")
    assert framer.next() == b"a2 CAPABILITY\r\n"


def test_synchronising_literal_asks_for_continuation_and_keeps_octets():
    framer = CommandFramer(max_line=100, max_literal=100)
    framer.feed(b'a LOGIN {5}\r\n')
    assert framer.next() == Continue()
    assert framer.next() is None
    framer.feed(b"alice {3}\r\n")
    assert framer.next() == Continue()
    framer.feed(b"p\r\n\r\n")
    command = framer.next()
    assert command == b"a LOGIN {5}\r\nalice {3}\r\np\r\n\r\n"
    parsed = parse_command(command)
    assert parsed.args == {"user": b"alice", "password": b"p\r\n"}


def test_non_synchronising_literal_needs_no_continuation():
    assert frame(b"a LOGIN {5+}\r\nalice bob\r\n") == [b"a LOGIN {5+}\r\nalice bob\r\n"]


def test_limits_raise_bye_or_toobig():
    with pytest.raises(LimitError):
        frame(b"a NOOP " + b"x" * 2000 + b"\r\n")
    with pytest.raises(LimitError):
        frame(b"a NOOP " + b"x" * 2000)  # no line end yet, but already too long
    with pytest.raises(TooBig) as error:
        frame(b"a1 APPEND INBOX {5000}\r\n")
    assert error.value.tag == "a1"
    with pytest.raises(LimitError):
        frame(b"a1 APPEND INBOX {5000+}\r\n")


def test_toobig_literal_leaves_the_framer_usable():
    framer = CommandFramer(max_line=100, max_literal=10)
    framer.feed(b"a APPEND INBOX {50}\r\nb NOOP\r\n")
    with pytest.raises(TooBig):
        framer.next()
    assert framer.next() == b"b NOOP\r\n"


# --- commands --------------------------------------------------------------------


def test_tags_atoms_quoted_strings():
    command = parse_command(b'A001 LOGIN "ali\\"ce" secret\r\n')
    assert (command.tag, command.name) == ("A001", "LOGIN")
    assert command.args == {"user": b'ali"ce', "password": b"secret"}


@pytest.mark.parametrize("line", [
    b"\r\n", b"a\r\n", b"* NOOP\r\n", b"a NOPE\r\n", b"a NOOP extra\r\n",
    b'a LOGIN "unterminated\r\n', b"a LOGIN {10}\r\nshort\r\n", b"a UID NOOP\r\n",
    b"a FETCH 0 FLAGS\r\n", b"a FETCH 1 (FLAGS\r\n", b"a STORE 1 FLAGS.LOUD (\\Seen)\r\n",
    b"a SEARCH FOO\r\n", b"a FETCH 1 BODY[4.HEADER.X]\r\n", b"a SELECT\r\n",
])
def test_malformed_commands_are_parse_errors(line):
    with pytest.raises(ParseError):
        parse_command(line)


def test_parse_error_carries_the_tag():
    with pytest.raises(ParseError) as error:
        parse_command(b"x12 FETCH\r\n")
    assert error.value.tag == "x12"


def test_sequence_sets_with_star_ranges_and_saved():
    command = parse_command(b"a FETCH 1:3,5,7:*,*:9 FLAGS\r\n")
    seqs = command.args["seqs"]
    assert seqs.ranges == ((1, 3), (5, 5), (7, None), (None, 9))
    assert seqs.resolve(20) == [(1, 3), (5, 5), (7, 20), (9, 20)]
    assert seqs.contains(8, 20) and not seqs.contains(4, 20)
    assert parse_command(b"a UID COPY $ Trash\r\n").args["seqs"] == SeqSet(saved=True)


def test_fetch_attributes_sections_partials_and_macros():
    command = parse_command(
        b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)] BODY[1.2.MIME]"
        b" BODY[]<0.100> BINARY.PEEK[1] RFC822.SIZE) (CHANGEDSINCE 5 VANISHED)\r\n")
    assert command.name == "UID FETCH"
    atts = command.args["atts"]
    assert atts[0] == FetchAtt("FLAGS")
    assert atts[1] == FetchAtt("BODY.PEEK", Section((), "HEADER.FIELDS", ("From", "To")))
    assert atts[1].peek
    assert atts[1].section.label() == "HEADER.FIELDS (From To)"
    assert atts[2].section == Section((1, 2), "MIME")
    assert atts[3] == FetchAtt("BODY", Section(), (0, 100))
    assert atts[4] == FetchAtt("BINARY.PEEK", Section((1,)))
    assert command.args["modifiers"] == {"CHANGEDSINCE": 5, "VANISHED": True}
    fast = parse_command(b"a FETCH 1 fast\r\n").args["atts"]
    assert [a.name for a in fast] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]


def test_store_forms():
    args = parse_command(b"a STORE 1:2 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\seen foo)\r\n").args
    assert args == {"seqs": SeqSet(((1, 2),)), "mode": "add", "silent": True,
                    "flags": ["\\Seen", "foo"], "unchanged_since": 7}
    args = parse_command(b"a STORE 1 FLAGS \\Deleted \\Draft\r\n").args
    assert args["mode"] == "replace" and args["flags"] == ["\\Deleted", "\\Draft"]


def test_search_program():
    args = parse_command(
        b'a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM "b\xc3\xb6b" (SEEN SINCE 1-Feb-2024)'
        b" NOT UID 3:* HEADER X-Spam yes 2,4 MODSEQ 10\r\n").args
    assert args["return"] == ["MIN", "COUNT"]
    key = args["key"]
    assert key.op == "AND"
    first, negation, header, seqs, modseq = key.args
    assert first == SearchKey("OR", (
        SearchKey("FROM", ("b\u00f6b",)),
        SearchKey("AND", (SearchKey("FLAG", ("\\Seen", True)),
                          SearchKey("SINCE", (date(2024, 2, 1),))))))
    assert negation == SearchKey("NOT", (SearchKey("UID", (SeqSet(((3, None),)),)),))
    assert header == SearchKey("HEADER", ("x-spam", "yes"))
    assert seqs == SearchKey("SEQ", (SeqSet(((2, 2), (4, 4))),))
    assert modseq == SearchKey("MODSEQ", (10,))
    assert parse_command(b"a SEARCH CHARSET KOI8-R ALL\r\n").args["bad_charset"] == "KOI8-R"


def test_append_with_flags_date_and_multiappend():
    data = (b'a APPEND Sent (\\Seen) "05-Mar-2024 10:11:12 +0100" {3+}\r\nabc'
            b" {2+}\r\nde\r\n")
    args = parse_command(data).args
    assert args["mailbox"] == "Sent"
    first, second = args["messages"]
    assert first == {"flags": ["\\Seen"], "data": b"abc", "catenate": None,
                     "date": datetime(2024, 3, 5, 9, 11, 12, tzinfo=UTC)}
    assert second == {"flags": [], "date": None, "data": b"de", "catenate": None}


def test_list_extended_and_select_qresync():
    args = parse_command(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" %/x) RETURN (CHILDREN STATUS '
        b"(MESSAGES UNSEEN))\r\n").args
    assert args["selection"] == ["SUBSCRIBED", "RECURSIVEMATCH"]
    assert args["patterns"] == ["INBOX", "%/x"]
    assert args["returns"] == ["CHILDREN", "STATUS"]
    assert args["status"] == ["MESSAGES", "UNSEEN"]
    args = parse_command(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41:211))\r\n"
                         ).args
    assert args["qresync"][:2] == (67890007, 20050715194045000)


# --- formatters ------------------------------------------------------------------


def test_strings_choose_quoted_or_literal():
    assert fmt.string("plain text") == b'"plain text"'
    assert fmt.string('say "hi"\\') == b'"say \\"hi\\"\\\\"'
    assert fmt.string("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert fmt.string("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"
    assert fmt.nstring(None) == b"NIL"
    assert fmt.astring("NIL") == b'"NIL"'
    assert fmt.astring("Sent") == b"Sent"


def test_internal_date_format():
    assert fmt.internal_date(datetime(2024, 3, 5, 9, 1, 2, tzinfo=UTC)) == \
        b'"05-Mar-2024 09:01:02 +0000"'


@pytest.mark.parametrize(("text", "encoded"), [
    ("INBOX", "INBOX"), ("A & B", "A &- B"), ("Entw\u00fcrfe", "Entw&APw-rfe"),
    ("\u65e5\u672c\u8a9e", "&ZeVnLIqe-"), ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e",
                                            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
])
def test_modified_utf7_examples(text, encoded):
    # RFC 3501 §5.1.3 examples
    assert fmt.mutf7_encode(text) == encoded
    assert fmt.mutf7_decode(encoded) == text


@pytest.mark.parametrize("bad", ["&Jjo!", "&U,BTFw", "&AGE-", "caf\u00e9"])
def test_modified_utf7_rejects_bad_names(bad):
    with pytest.raises(ValueError):
        fmt.mutf7_decode(bad)


@given(st.text(max_size=40))
def test_modified_utf7_round_trip(text):
    assert fmt.mutf7_decode(fmt.mutf7_encode(text)) == text


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bytes_never_crash_the_framer_or_parser(data):
    framer = CommandFramer(max_line=100, max_literal=50)
    framer.feed(data)
    for _ in range(50):
        try:
            item = framer.next()
        except ParseError:
            continue
        if item is None:
            break
        if isinstance(item, bytes):
            with contextlib.suppress(ParseError):
                parse_command(item)


@given(st.binary(max_size=60), st.binary(max_size=60))
def test_login_round_trips_through_string_formatting(user, password):
    line = b"t LOGIN " + fmt.string(user) + b" " + fmt.string(password) + b"\r\n"
    framer = CommandFramer(max_line=1000, max_literal=1000)
    framer.feed(line)
    command = framer.next()
    while isinstance(command, Continue):
        command = framer.next()
    if b"\0" in user or b"\0" in password:
        with pytest.raises(ParseError):
            parse_command(command)
        return
    assert parse_command(command).args == {"user": user, "password": password}


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), min_size=1,
                max_size=8))
def test_sequence_set_round_trip(ranges):
    text = ",".join(f"{a}:{b}" for a, b in ranges)
    seqs = parse_command(f"a FETCH {text} UID\r\n".encode()).args["seqs"]
    assert seqs.ranges == tuple(ranges)


@pytest.mark.parametrize(("subject", "base"), [
    ("Re: hello", "HELLO"), ("RE: Fwd:  [list] Re: hello (fwd)", "HELLO"),
    ("[Fwd: Re: lunch]", "LUNCH"), ("[list] news", "NEWS"), ("[only blob]", "[ONLY BLOB]"),
    ("re:re:re: x", "X"), ("Fw[2]: report", "REPORT"), ("", ""),
])
def test_base_subject(subject, base):
    # RFC 5256 §2.1
    assert ordering.base_subject(subject) == base


def test_sort_and_ordered_subject_threads():
    def row(subject, day, size, sender):  # type: ignore[no-untyped-def]
        sent = datetime(2024, 3, day, tzinfo=UTC)
        return {"blob__subject": subject, "blob__sent_date": sent, "internal_date": sent,
                "size": size, "blob__envelope": [None, None, [[None, None, sender, "x"]],
                                                 None, None, None, None, None, None, None]}

    items = [(1, row("b", 3, 10, "zed")), (2, row("Re: a", 2, 30, "amy")),
             (3, row("a", 1, 20, "Bob")), (4, row("a", 4, 20, "bob"))]
    assert ordering.sort(items, [("SUBJECT", False), ("DATE", True)]) == [4, 2, 3, 1]
    assert ordering.sort(items, [("SIZE", True)]) == [2, 3, 4, 1]
    assert ordering.sort(items, [("FROM", False)]) == [2, 3, 4, 1]
    assert ordering.ordered_subject(items) == "(3 (2)(4))(1)"
    assert ordering.ordered_subject(items[:1]) == "(1)"


def test_references_threads():
    # RFC 5256 §3 REFERENCES: ancestry from References/In-Reply-To, dummies for
    # missing parents, then threads of the same base subject merged.
    def row(day, subject, message_id, references=(), in_reply_to=""):  # type: ignore[no-untyped-def]
        sent = datetime(2024, 3, day, tzinfo=UTC)
        return {"blob__subject": subject, "blob__sent_date": sent, "internal_date": sent,
                "size": 1, "blob__envelope": [None] * 10, "blob__message_id": message_id,
                "blob__references": list(references), "blob__in_reply_to": in_reply_to}

    items = [
        (1, row(1, "plan", "<a>")),
        (2, row(2, "Re: plan", "<b>", ["<a>"])),
        (3, row(3, "Re: plan", "<c>", in_reply_to="<a>")),
        (4, row(4, "Re: Re: plan", "<d>", ["<a>", "<b>"])),
        (5, row(5, "other", "<e>")),
        (6, row(6, "Re: lost", "<f>", ["<missing>"])),
        (7, row(7, "Re: lost", "<g>", ["<missing>"])),
        (8, row(8, "Re: other", "<h>")),  # no references: joined by subject
    ]
    assert ordering.references(items) == "(1 (2 4)(3))(5 8)((6)(7))"
    assert ordering.references(items[:1]) == "(1)"
    # A reference loop does not hang or lose messages.
    looped = [(1, row(1, "x", "<a>", ["<b>"])), (2, row(2, "y", "<b>", ["<a>"]))]
    assert sorted(re.findall(r"\d+", ordering.references(looped))) == ["1", "2"]


def _fetch_line(items: bytes) -> list:
    """A FETCH response line split where IMAPClient's parser expects literals."""
    parts: list = []
    rest = b"1 (" + items + b")"
    while (match := re.search(rb"\{(\d+)\}\r\n", rest)) is not None:
        size = int(match.group(1))
        start = match.end()
        parts.append((rest[:match.start()] + match.group(0)[:-2], rest[start:start + size]))
        rest = rest[start + size:]
    parts.append(rest)
    return parts


_mail_bytes = st.lists(st.sampled_from([
    b"From: A <a@x>\r\n", b"To: b@y, \"Q, R\" <q@r>\r\n", b"Subject: =?utf-8?q?h=C3=A9?=\r\n",
    b"Content-Type: multipart/mixed; boundary=z\r\n", b"Content-Type: message/rfc822\r\n",
    b"\r\n", b"--z\r\n", b"--z--\r\n", b"body \xff\x00 text\r\n", b"Cc: undisclosed:;\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%C3%A9.txt\r\n", b"\"\\\r\n",
]), max_size=30).map(b"".join)


@given(_mail_bytes | st.binary(max_size=300))
@settings(max_examples=200)
def test_envelope_and_bodystructure_always_parse_as_imap(raw):
    from imapclient.response_parser import parse_fetch_response

    from apps.store import mime

    info = mime.analyze(raw)
    line = (b"ENVELOPE " + fmt.envelope(info.envelope) + b" BODYSTRUCTURE "
            + fmt.body_structure(info.bodystructure) + b" BODY "
            + fmt.body_structure(info.bodystructure, extended=False))
    parsed = parse_fetch_response(_fetch_line(line))[1]
    assert {b"ENVELOPE", b"BODYSTRUCTURE", b"BODY"} <= set(parsed)
    for part in (), (1,), (1, 1), (2,):
        data = fmt.section_bytes(raw, info.bodystructure, part, "")
        assert data is None or data in raw
