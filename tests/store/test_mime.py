"""Tests of apps.store.mime: pure functions on bytes, no database."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.store import mime
from apps.store.mime import analyze, extract_text, find_part
from tests.conftest import CORPORA

# Hypothesis: small runs, no example database in the tree, and the project's autouse
# fixtures are harmless for pure functions.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def crlf(text: str) -> bytes:
    """A message written with LF in the test, sent with CRLF as on the wire."""
    return text.replace("\n", "\r\n").encode()


def body(raw: bytes, part: dict) -> bytes:
    return raw[part["body_start"] : part["body_end"]]


def header(raw: bytes, part: dict) -> bytes:
    return raw[part["header_start"] : part["body_start"]]


PART_KEYS = {
    "type", "subtype", "params", "id", "description", "encoding", "size", "lines", "md5",
    "disposition", "language", "location", "header_start", "body_start", "body_end",
    "parts", "message",
}  # fmt: skip


def check_part(raw: bytes, part: dict, low: int, high: int) -> int:
    """Check the invariants of a part and its subtree; return the number of parts."""
    assert set(part) == PART_KEYS
    assert part["type"] == part["type"].lower() and part["subtype"] == part["subtype"].lower()
    assert low <= part["header_start"] <= part["body_start"] <= part["body_end"] <= high
    assert part["size"] == part["body_end"] - part["body_start"] == len(body(raw, part))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in part["params"])
    is_message = (part["type"], part["subtype"]) in {("message", "rfc822"), ("message", "global")}
    # A formatter may rely on these: children only for multipart, envelope only for messages.
    assert bool(part["parts"]) == (part["type"] == "multipart")
    assert (part["message"] is not None) == is_message
    if part["type"] == "text" or is_message:
        data = body(raw, part)
        # Line breaks, as Dovecot counts them: an unbroken last line adds none.
        assert part["lines"] == data.count(b"\n")
    else:
        assert part["lines"] is None
    count = 1
    previous_end = part["body_start"]
    for child in part["parts"]:
        assert child["header_start"] >= previous_end  # in order, not overlapping
        count += check_part(raw, child, part["body_start"], part["body_end"])
        previous_end = child["body_end"]
    if part["message"] is not None:
        inner = part["message"]["bodystructure"]
        assert len(part["message"]["envelope"]) == 10
        assert inner["header_start"] == part["body_start"]
        assert inner["body_end"] == part["body_end"]
        count += check_part(raw, inner, part["body_start"], part["body_end"])
    return count


def check_info(raw: bytes, info: mime.MessageInfo) -> None:
    json.dumps(info.envelope)
    json.dumps(info.bodystructure)
    json.dumps([info.subject, info.from_text, info.to_text, info.cc_text, info.bcc_text,
                info.message_id, info.in_reply_to, info.references])  # fmt: skip
    assert len(info.envelope) == 10
    root = info.bodystructure
    assert root["header_start"] == 0 and root["body_end"] == len(raw)
    check_part(raw, root, 0, len(raw))
    assert info.date is None or info.date.tzinfo is not None


def sections(structure: dict) -> list[tuple[list[int], dict]]:
    """Every (section, part) of a structure, numbered as RFC 3501 §6.4.5 does."""
    found: list[tuple[list[int], dict]] = []

    def message_children(body_part: dict) -> list[dict]:
        return body_part["parts"] or [body_part]

    def walk(prefix: list[int], children: list[dict]) -> None:
        for number, child in enumerate(children, 1):
            section = [*prefix, number]
            found.append((section, child))
            if child["parts"]:
                walk(section, child["parts"])
            elif child["message"] is not None:
                walk(section, message_children(child["message"]["bodystructure"]))

    walk([], message_children(structure))
    return found


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    # analyze() survives its own bugs by logging them; a test must see them.
    errors = [r for r in caplog.records if r.name == mime.__name__ and r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


# ---------------------------------------------------------------------------
# Simple messages and headers
# ---------------------------------------------------------------------------

SIMPLE = crlf(
    "From: Alice Example <alice@example.org>\n"
    "To: bob@example.net\n"
    "Subject: Lunch\n"
    "Date: Thu, 26 Nov 2026 10:00:00 +0100\n"
    "Message-ID: <m1@example.org>\n"
    "\n"
    "Shall we?\n"
    "Noon.\n"
)


def test_simple_text_message():
    info = analyze(SIMPLE)
    alice = [["Alice Example", None, "alice", "example.org"]]
    assert info.envelope == [
        "Thu, 26 Nov 2026 10:00:00 +0100",
        "Lunch",
        alice,
        alice,  # sender defaults to from
        alice,  # reply-to defaults to from
        [[None, None, "bob", "example.net"]],
        None,
        None,
        None,
        "<m1@example.org>",
    ]
    root = info.bodystructure
    assert (root["type"], root["subtype"], root["params"]) == (
        "text",
        "plain",
        [["charset", "us-ascii"]],
    )
    assert root["encoding"] == "7bit" and root["disposition"] is None
    assert body(SIMPLE, root) == b"Shall we?\r\nNoon.\r\n"
    assert header(SIMPLE, root).endswith(b"<m1@example.org>\r\n\r\n")
    assert root["lines"] == 2 and root["size"] == 18
    assert (info.subject, info.from_text, info.to_text) == (
        "Lunch", "Alice Example <alice@example.org>", "bob@example.net")  # fmt: skip
    assert (info.cc_text, info.bcc_text, info.in_reply_to, info.references) == ("", "", "", [])
    assert info.message_id == "<m1@example.org>"
    assert info.date == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert extract_text(SIMPLE) == "Shall we?\nNoon."
    check_info(SIMPLE, info)


def test_folded_headers_are_unfolded_and_first_occurrence_wins():
    raw = crlf(
        "Subject: a long\n"
        "\tsubject line\n"
        "To: One <one@example.org>,\n"
        "  Two <two@example.org>\n"
        "Subject: second subject is ignored\n"
        "\n"
        "x"
    )
    info = analyze(raw)
    assert info.envelope[1] == "a long\tsubject line"  # CRLF removed, the WSP kept
    assert info.subject == "a long\tsubject line"
    assert info.envelope[5] == [
        ["One", None, "one", "example.org"],
        ["Two", None, "two", "example.org"],
    ]
    assert info.bodystructure["lines"] == 0  # "x" without a final line break


def test_rfc2047_subject_is_decoded_for_display_but_raw_in_envelope():
    raw = crlf(
        "Subject: =?UTF-8?Q?Caf=C3=A9?= =?utf-8?B?IOKCrA==?= and\n"
        " =?iso-8859-1?q?na=EFve?= =?x-bogus?q?b=C3=A9?=\n"
        "From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\n"
        "\n"
    )
    info = analyze(raw)
    # RFC 2047 §6.2: the space between adjacent encoded words disappears.
    assert info.subject == "Café € and naïvebé"
    assert info.envelope[1].startswith("=?UTF-8?Q?Caf=C3=A9?=")
    assert info.envelope[2] == [["=?utf-8?q?J=C3=B6rg?=", None, "jorg", "example.org"]]
    assert info.from_text == "Jörg <jorg@example.org>"


def test_rfc2047_multibyte_character_split_across_words():
    # Senders cut UTF-8 sequences between encoded words; the bytes are joined first.
    raw = b"Subject: =?utf-8?b?w6k=?= =?utf-8?q?=E2=82?= =?utf-8?q?=AC?=\r\n\r\n"
    assert analyze(raw).subject == "é€"


def test_utf8_and_latin1_raw_headers():
    raw = "Subject: Grüße\r\nFrom: Jöhn <jöhn@exämple.org>\r\n\r\n".encode()
    info = analyze(raw)
    assert info.envelope[1] == "Grüße"  # RFC 6532
    assert info.envelope[2] == [["Jöhn", None, "jöhn", "exämple.org"]]
    latin1 = "Subject: Grüße\r\n\r\n".encode("latin-1")
    assert analyze(latin1).envelope[1] == "Grüße"


def test_group_addresses():
    raw = crlf(
        'To: Friends: a@example.org, "Bee, B." <b@example.org>;, c@example.org,\n'
        " undisclosed-recipients:;\n"
        "Cc: Team: ;\n"
        "\n"
    )
    info = analyze(raw)
    assert info.envelope[5] == [
        [None, None, "Friends", None],
        [None, None, "a", "example.org"],
        ["Bee, B.", None, "b", "example.org"],
        [None, None, None, None],
        [None, None, "c", "example.org"],
        [None, None, "undisclosed-recipients", None],
        [None, None, None, None],
    ]
    assert info.envelope[6] == [[None, None, "Team", None], [None, None, None, None]]


def test_address_oddities():
    raw = crlf(
        "From: jdoe@example.org (John Doe)\n"
        "To: <@relay.example:route@example.org>, postmaster, <>\n"
        'Cc: "john doe"@example.org, A <a@example.org> B <b@example.org>\n'
        "Bcc: Unclosed <u@example.org\n"
        "\n"
    )
    env = analyze(raw).envelope
    assert env[2] == [["John Doe", None, "jdoe", "example.org"]]  # comment taken as name
    assert env[5] == [
        [None, "@relay.example", "route", "example.org"],
        # No domain: host "" because a NIL host would read as a group (RFC 3501 §7.4.2).
        [None, None, "postmaster", ""],
        [None, None, "", ""],
    ]
    assert env[6] == [
        [None, None, '"john doe"', "example.org"],
        ["A", None, "a", "example.org"],
        ["B", None, "b", "example.org"],
    ]
    assert env[7] == [["Unclosed", None, "u", "example.org"]]


def test_a_huge_address_field_is_read_up_to_postfixs_header_limit():
    # 20,000 recipients (~420 KB in one field): ENVELOPE lists the first
    # 100 KiB's worth, each address whole, as Postfix keeps 100 KiB of a header.
    to = ", ".join(f"user{n}@example.org" for n in range(20000))
    env = analyze(crlf(f"From: a@example.org\nTo: {to}\nSubject: s\n\n")).envelope
    listed = env[5]
    assert 4000 < len(listed) < 20000
    assert listed == [[None, None, f"user{n}", "example.org"] for n in range(len(listed))]
    assert env[1] == "s" and env[2] == [[None, None, "a", "example.org"]]


def test_missing_or_empty_sender_and_reply_to_default_to_from():
    raw = crlf("From: a@example.org\nReply-To:\nSender:   \n\n")
    env = analyze(raw).envelope
    frm = [[None, None, "a", "example.org"]]
    assert env[2] == env[3] == env[4] == frm
    raw = crlf("From: a@example.org\nSender: s@example.org\nReply-To: r@example.org\n\n")
    env = analyze(raw).envelope
    assert env[3] == [[None, None, "s", "example.org"]]
    assert env[4] == [[None, None, "r", "example.org"]]
    # No From at all: everything stays NIL.
    assert analyze(b"Subject: x\r\n\r\n").envelope[2:5] == [None, None, None]


def test_message_ids_references_and_dates():
    raw = crlf(
        "Message-ID: (comment) <a@example.org>\n"
        "In-Reply-To: <p1@example.org> <p2@example.org>\n"
        "References: <r1@example.org>\n  <r2@exa\n mple.org> junk <r3@example.org>\n"
        "Date: Mon, 6 Feb 1993 02:53:47 -0000\n"
        "\n"
    )
    info = analyze(raw)
    assert info.message_id == "<a@example.org>"
    assert info.in_reply_to == "<p1@example.org>"
    assert info.envelope[8] == "<p1@example.org> <p2@example.org>"
    assert info.references == ["<r1@example.org>", "<r2@example.org>", "<r3@example.org>"]
    assert info.date == datetime(1993, 2, 6, 2, 53, 47, tzinfo=UTC)  # -0000: no zone, UTC
    zoned = analyze(b"Date: 6 Feb 93 02:53 +0530\r\n\r\n").date
    assert zoned == datetime(1993, 2, 6, 2, 53, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    for bad in (b"Date: <HR>\r\n\r\n", b"Date: 35 Feb 1993 02:53 +9999\r\n\r\n", b"x"):
        assert analyze(bad).date is None


# ---------------------------------------------------------------------------
# Multipart structure
# ---------------------------------------------------------------------------

NESTED = crlf(
    "From: a@example.org\n"
    "Subject: nested\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "preamble\n"
    "--outer\n"
    'Content-Type: multipart/alternative; boundary="inner"\n'
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Caf=C3=A9 plain\n"
    "--inner  \n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<p>Caf&eacute; <b>html</b></p>\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: application/pdf; name=doc.pdf\n"
    "Content-Disposition: attachment; filename=doc.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-ID: <pdf@example.org>\n"
    "Content-Description: The document\n"
    "Content-Language: en, de\n"
    "Content-Location: http://example.org/doc.pdf\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "JVBERi0xLjQK\n"
    "--outer--\n"
    "epilogue\n"
)


def test_multipart_alternative_inside_multipart_mixed():
    info = analyze(NESTED)
    check_info(NESTED, info)
    root = info.bodystructure
    assert (root["type"], root["subtype"], root["params"]) == (
        "multipart",
        "mixed",
        [["boundary", "outer"]],
    )
    assert root["lines"] is None
    alternative, pdf = root["parts"]
    assert (alternative["type"], alternative["subtype"]) == ("multipart", "alternative")
    plain, htmlpart = alternative["parts"]
    # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter.
    assert body(NESTED, plain) == b"Caf=C3=A9 plain"
    assert plain["encoding"] == "quoted-printable" and plain["lines"] == 0
    assert header(NESTED, plain).startswith(b"Content-Type: text/plain")
    assert body(NESTED, htmlpart) == b"<p>Caf&eacute; <b>html</b></p>"
    assert body(NESTED, alternative).endswith(b"--inner--")
    assert body(NESTED, pdf) == b"JVBERi0xLjQK"
    assert pdf["params"] == [["name", "doc.pdf"]]
    assert pdf["disposition"] == ["attachment", [["filename", "doc.pdf"]]]
    assert (pdf["id"], pdf["description"]) == ("<pdf@example.org>", "The document")
    assert (pdf["language"], pdf["location"]) == (["en", "de"], "http://example.org/doc.pdf")
    assert (pdf["md5"], pdf["encoding"], pdf["size"]) == ("Q2hlY2sgSW50ZWdyaXR5IQ==", "base64", 12)

    assert find_part(root, []) is root
    assert find_part(root, [1]) is alternative
    assert find_part(root, [1, 2]) is htmlpart
    assert find_part(root, [2]) is pdf
    for missing in ([0], [3], [1, 3], [2, 1], [1, 1, 1], [-1]):
        assert find_part(root, missing) is None

    # Of an alternative only the plain text is indexed, decoded.
    assert extract_text(NESTED) == "Café plain"


def test_message_rfc822_attachment_and_find_part_descends_into_it():
    raw = crlf(
        "Subject: outer\n"
        "Content-Type: multipart/mixed; boundary=b1\n"
        "\n"
        "--b1\n"
        "\n"
        "see attached\n"
        "--b1\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: Inner <inner@example.org>\n"
        "Subject: inner subject\n"
        "Content-Type: multipart/mixed; boundary=b2\n"
        "\n"
        "--b2\n"
        "\n"
        "inner one\n"
        "--b2\n"
        "Content-Type: text/html\n"
        "\n"
        "<i>inner two</i>\n"
        "--b2--\n"
        "--b1\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "Subject: simple inner\n"
        "\n"
        "just text\n"
        "--b1--\n"
    )
    info = analyze(raw)
    check_info(raw, info)
    root = info.bodystructure
    first, forwarded, simple = root["parts"]
    assert header(raw, first) == b"\r\n" and body(raw, first) == b"see attached"
    assert (forwarded["type"], forwarded["subtype"]) == ("message", "rfc822")
    message = forwarded["message"]
    assert message["envelope"][1] == "inner subject"
    assert message["envelope"][2] == [["Inner", None, "inner", "example.org"]]
    inner = message["bodystructure"]
    assert inner["header_start"] == forwarded["body_start"]
    assert forwarded["lines"] == body(raw, forwarded).count(b"\n")

    assert find_part(root, [2]) is forwarded
    assert find_part(root, [2, 1]) is inner["parts"][0]
    assert body(raw, find_part(root, [2, 2])) == b"<i>inner two</i>"
    assert find_part(root, [2, 3]) is None
    # A non-multipart inner message has only a part 1: its body.
    inner_simple = simple["message"]["bodystructure"]
    assert find_part(root, [3, 1]) is inner_simple
    assert body(raw, inner_simple) == b"just text"
    assert find_part(root, [3, 2]) is None
    assert [s for s, _part in sections(root)] == [[1], [2], [2, 1], [2, 2], [3], [3, 1]]

    assert extract_text(raw) == "see attached\ninner one\ninner two\njust text"


def test_find_part_on_a_single_part_message():
    root = analyze(SIMPLE).bodystructure
    assert find_part(root, [1]) is root  # RFC 3501 §6.4.5: a non-multipart has a part 1
    assert find_part(root, [2]) is None
    assert find_part(root, [1, 1]) is None


def test_multipart_digest_children_default_to_message_rfc822():
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n"
        "\n"
        "--d\n"
        "\n"
        "Subject: first\n"
        "\n"
        "one\n"
        "--d\n"
        "Content-Type: text/plain\n"
        "\n"
        "a note\n"
        "--d--\n"
    )
    root = analyze(raw).bodystructure
    digest_item, note = root["parts"]
    assert (digest_item["type"], digest_item["subtype"]) == ("message", "rfc822")
    assert digest_item["message"]["envelope"][1] == "first"
    # The encapsulated message itself defaults to text/plain, like any message.
    assert digest_item["message"]["bodystructure"]["type"] == "text"
    assert (note["type"], note["subtype"]) == ("text", "plain")


def test_rfc2231_parameter_continuations():
    raw = crlf(
        "Content-Type: application/octet-stream;\n"
        "  name*0*=utf-8''%E2%82%AC%20;\n"
        '  name*1="rates and fees.txt";\n'
        "  title*=us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A;\n"
        "  filename=\"fallback.txt\"; filename*=iso-8859-1''caf%E9.txt;\n"
        '  charset*0="us-"; charset*1="ascii"\n'
        'Content-Disposition: attachment; filename*0="long "; filename*1="name.pdf"\n'
        "\n"
        "data"
    )
    part = analyze(raw).bodystructure
    assert part["params"] == [
        ["name", "€ rates and fees.txt"],
        ["title", "This is ***fun***"],
        ["filename", "café.txt"],  # the RFC 2231 form wins over the plain one
        ["charset", "us-ascii"],
    ]
    assert part["disposition"] == ["attachment", [["filename", "long name.pdf"]]]


def test_parameter_oddities():
    raw = crlf(
        'Content-Type: Text/HTML; CharSet="UTF-8" (comment); charset=latin1;\n'
        '  name="C:\\\\dir\\file \\"x\\".htm"; size=Invoice_(1).pdf\n'
        "Content-Transfer-Encoding: Quoted-Printable; \n"
        "\n"
    )
    part = analyze(raw).bodystructure
    assert (part["type"], part["subtype"], part["encoding"]) == ("text", "html", "quoted-printable")
    assert part["params"] == [
        ["charset", "UTF-8"],  # first occurrence wins, values keep their case
        ["name", 'C:\\dir\\file "x".htm'],
        ["size", "Invoice_(1).pdf"],
    ]
    missing_semicolon = analyze(b"Content-Type: text/plain charset=utf-8\r\n\r\n").bodystructure
    assert missing_semicolon["params"] == [["charset", "utf-8"]]
    # RFC 2045 §5.2: an invalid Content-Type means text/plain; its params are kept.
    invalid = analyze(b'Content-Type: application-x-gzip; name="a.gz"\r\n\r\n').bodystructure
    assert (invalid["type"], invalid["subtype"]) == ("text", "plain")
    assert invalid["params"] == [["charset", "us-ascii"], ["name", "a.gz"]]


def test_base64_part_sizes_are_encoded_octets():
    encoded = b"SGVsbG8sIHdvcmxkIQ==\r\nSGVsbG8gYWdhaW4=\r\n"
    raw = (
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n\r\n" + encoded + b"\r\n--zz\r\n"
        b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded + b"--zz--\r\n"
    )  # fmt: skip
    text_part, image = analyze(raw).bodystructure["parts"]
    # The line break that ends the base64 and the one before "--zz" are different bytes.
    assert body(raw, text_part) == encoded and text_part["size"] == len(encoded)
    assert text_part["encoding"] == "base64" and text_part["lines"] == 2
    assert body(raw, image) == encoded[:-2] and image["lines"] is None
    assert extract_text(raw) == "Hello, world!Hello again"


def test_lf_only_message():
    raw = NESTED.replace(b"\r\n", b"\n")
    info = analyze(raw)
    check_info(raw, info)
    plain = find_part(info.bodystructure, [1, 1])
    assert body(raw, plain) == b"Caf=C3=A9 plain"
    assert header(raw, plain).endswith(b"quoted-printable\n\n")
    assert info.envelope[1] == "nested"
    # Mixed line endings in one message work the same.
    mixed = b"Subject: m\nContent-Type: multipart/mixed; boundary=x\r\n\n--x\n\r\nbody\r\n--x--\n"
    part = analyze(mixed).bodystructure["parts"][0]
    assert body(mixed, part) == b"body"


def test_missing_closing_boundary_runs_to_end():
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\nstill two\n")
    root = analyze(raw).bodystructure
    assert [body(raw, p) for p in root["parts"]] == [b"one", b"two\r\nstill two\r\n"]
    assert root["parts"][-1]["body_end"] == len(raw)


def test_delimiters_need_their_own_line_and_may_have_trailing_space():
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n"
        "\n"
        "--b \t\n"
        "\n"
        "text --b not a delimiter\n"
        "--bb is a longer boundary, not ours\n"
        "--b--x is not a close delimiter\n"
        "--b--   \n"
        "epilogue\n"
        "--b\n"
        "\n"
        "after the close delimiter: epilogue, not a part\n"
    )
    root = analyze(raw).bodystructure
    assert len(root["parts"]) == 1
    assert body(raw, root["parts"][0]).endswith(b"--b--x is not a close delimiter")


def test_multipart_without_usable_boundary_is_one_text_leaf():
    for content_type in (
        b"multipart/mixed",
        b'multipart/mixed; boundary=""',
        b"multipart/x; boundary=nope",
    ):
        raw = b"Content-Type: " + content_type + b"\r\n\r\n--other\r\nhello\r\n"
        info = analyze(raw)
        check_info(raw, info)
        root = info.bodystructure
        assert (root["type"], root["subtype"], root["parts"]) == ("text", "plain", [])
        assert ["charset", "us-ascii"] in root["params"]
        assert root["lines"] == 2
        assert extract_text(raw) == "--other\nhello"


def test_no_header_body_separator():
    raw = b"From: a@example.org\r\nSubject: no body\r\nthis line is not a header\r\nX: y"
    info = analyze(raw)
    check_info(raw, info)
    root = info.bodystructure
    assert info.subject == "no body"  # the stray line is skipped, not appended
    assert root["body_start"] == root["body_end"] == len(raw) and root["size"] == 0
    assert root["lines"] == 0
    # A part that starts with a non-header line has no header: its body starts there.
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nplain words\r\n--b--"
    part = analyze(raw).bodystructure["parts"][0]
    assert part["header_start"] == part["body_start"] and body(raw, part) == b"plain words"
    # Header lines then the delimiter: all header, empty body.
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n--b--"
    )
    part = analyze(raw).bodystructure["parts"][0]
    assert part["subtype"] == "html" and part["size"] == 0


def test_mbox_from_line_and_byte_order_mark_are_not_headers():
    raw = b"From alice@example.org Mon Feb  8 02:53:47 1993\nSubject: mbox\n\nbody\n"
    info = analyze(raw)
    assert info.subject == "mbox" and body(raw, info.bodystructure) == b"body\n"
    assert analyze(b"\xef\xbb\xbfSubject: bom\r\n\r\nx").subject == "bom"


def test_empty_input():
    info = analyze(b"")
    check_info(b"", info)
    assert info.envelope == [None] * 10
    assert (info.subject, info.message_id, info.references, info.date) == ("", "", [], None)
    root = info.bodystructure
    assert (root["type"], root["size"], root["lines"], root["body_start"]) == ("text", 0, 0, 0)
    assert find_part(root, [1]) is root
    assert extract_text(b"") == ""


def test_binary_garbage():
    raw = bytes(range(256)) * 40
    info = analyze(raw)
    check_info(raw, info)
    assert isinstance(extract_text(raw), str)


def _nested_multiparts(depth: int) -> bytes:
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    return head + b"Content-Type: text/plain\r\n\r\ndeep" + tail


def _depth(part: dict) -> int:
    below = [*part["parts"]]
    if part["message"] is not None:
        below.append(part["message"]["bodystructure"])
    return 1 + max((_depth(p) for p in below), default=0)


def test_nesting_deeper_than_the_cap_becomes_an_opaque_leaf():
    raw = _nested_multiparts(mime.MAX_DEPTH + 50)
    info = analyze(raw)
    check_info(raw, info)
    assert _depth(info.bodystructure) == mime.MAX_DEPTH + 1
    deepest = info.bodystructure
    while deepest["parts"]:
        deepest = deepest["parts"][0]
    assert (deepest["type"], deepest["subtype"]) == ("application", "octet-stream")
    assert extract_text(raw) == ""  # the text sits inside the opaque part

    messages = b"Content-Type: message/rfc822\r\n\r\n" * 300 + b"Subject: deep\r\n\r\nhi"
    info = analyze(messages)
    check_info(messages, info)
    assert _depth(info.bodystructure) == mime.MAX_DEPTH + 1

    within = _nested_multiparts(mime.MAX_DEPTH - 1)
    assert extract_text(within) == "deep"


def test_encoded_message_rfc822_is_an_opaque_leaf():
    raw = (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\nU3ViamVjdDogeA==\r\n"
    )
    root = analyze(raw).bodystructure
    assert (root["type"], root["subtype"], root["message"], root["lines"]) == (
        "application", "octet-stream", None, None)  # fmt: skip


def test_part_budget_caps_the_number_of_parts(monkeypatch):
    monkeypatch.setattr(mime, "MAX_PARTS", 5)
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * 20
        + b"--b--\r\n"
    )
    info = analyze(raw)
    check_info(raw, info)
    parts = info.bodystructure["parts"]
    assert len(parts) == 4  # the root and four parts
    assert parts[-1]["body_end"] == len(raw)  # the last part keeps the rest


def test_extract_text_html_charsets_and_limit():
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n"
        "\n"
        "--b\n"
        "Content-Type: text/html; charset=x-no-such-charset\n"
        "\n"
        "<html><head><style>p {color: red}</style><script>var x = '<p>';</script></head>\n"
        "<body><!-- hidden --><p>Fish &amp; chips</p><div>caf\u00e9</div>"
        "<table><tr><td>a</td><td>b</td></tr></table>&#9731; 1 < 2</body></html>\n"
        "--b\n"
        "Content-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "na=EFve soft=\n"
        "break\n"
        "--b\n"
        "Content-Type: application/octet-stream\n"
        "\n"
        "not text\n"
        "--b--\n"
    )
    text = extract_text(raw)
    assert text == "Fish & chips\ncafé\na b\n☃ 1 < 2\nnaïve softbreak"
    assert extract_text(raw, limit=4) == "Fish"
    assert extract_text(raw, limit=0) == ""
    assert "color" not in text and "hidden" not in text


# ---------------------------------------------------------------------------
# Speed: hostile shapes must stay linear (a quadratic step would take minutes)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * 400_000, id="parts"
        ),
        pytest.param(b"Content-Type: text/html\r\n\r\n" + b"<a<!--<script " * 200_000, id="html"),
        pytest.param(b"Subject: " + b"=?utf-8?q?=C3" * 200_000 + b"\r\n\r\n", id="words"),
        pytest.param(b"To: " + b'((("<' * 200_000 + b"\r\n\r\n", id="addresses"),
        pytest.param(
            b"Content-Type: text/plain; a=b" + b" " * 500_000 + b"c)\r\n\r\n", id="params"
        ),
        pytest.param(b"Subject: x\n" + b"a\n" * 200_000, id="no-separator"),
        pytest.param(b"Content-Type: text/html\r\n\r\n&#" + b"9" * 100_000, id="charref"),
    ],
)
def test_hostile_shapes_are_fast(raw):
    info = analyze(raw)
    check_info(raw, info)
    assert isinstance(extract_text(raw), str)


# ---------------------------------------------------------------------------
# Real mail
# ---------------------------------------------------------------------------


def _corpus() -> list[Path]:
    return [path for name in ("mime", "ham", "spam")
            for path in sorted((CORPORA / name).iterdir())]


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_message(path: Path, caplog: pytest.LogCaptureFixture):
    raw = path.read_bytes()
    info = analyze(raw)
    check_info(raw, info)
    for section, part in sections(info.bodystructure):
        assert find_part(info.bodystructure, section) is part
    assert isinstance(extract_text(raw), str)
    assert_no_errors_logged(caplog)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/alternative; boundary="c"\n',
    b"Content-Type: multipart/digest; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/global\n",
    b"Content-Type: text/html; charset*0*=utf-8''%E2%82; charset*1=%AC\r\n",
    b"Content-Type: text/plain; charset=x-bogus\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment; filename*=utf-8''%C3%A9\r\n",
    b'From: "a" <b@c>, g: d@e, (x) f;\r\n',
    b"To: =?utf-8?q?J=C3=B6?= <a@b>\r\n",
    b"Subject: =?utf-8?b?w6k=?= =?x?q?=FF?=\r\n",
    b"Date: Mon, 6 Feb 1993 02:53:47 -0800\r\n",
    b"Message-ID: <x@y>\r\n",
    b"--b\r\n", b"--b--\r\n", b"--b", b"--c\n", b"--c--", b"\r\n", b"\n", b"\r", b" ", b"\t",
    b"<p>x&amp;</p><script>", b"=?", b"?=", b"(", b")", b'"', b"\\", b"<", b">", b":", b";",
    b"aGVsbG8=\r\n", b"=3D=\r\n", b"\xff\xfe", b"\xef\xbb\xbf", b"From x\n",
]  # fmt: skip
MIMEISH = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=60).map(b"".join)


def _check_everything(raw: bytes) -> None:
    # The private functions: analyze() would log and hide a bug that hypothesis must see.
    info = mime._analyze(raw)
    check_info(raw, info)
    for section, part in sections(info.bodystructure):
        assert find_part(info.bodystructure, section) is part
    assert len(mime._extract_text(raw, 200)) <= 200
    assert analyze(raw) == info


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw):
    _check_everything(raw)


@FUZZ
@given(MIMEISH)
def test_mime_like_bytes_never_raise(raw):
    _check_everything(raw)
    _check_everything(raw.replace(b"\r\n", b"\n"))


# ---------------------------------------------------------------------------
# Header fields inserted into a stored message (apps/store/filed.py)
# ---------------------------------------------------------------------------

ADDED = (b"Authentication-Results: mx.test;\r\n\tspf=pass smtp.mailfrom=a@b.example;\r\n"
         b"\tdkim=none; dmarc=none\r\nX-Spam-Score: 0.0\r\nX-Spam-Status: No, score=0.0\r\n")


def _assert_inserted_fields_only_move_offsets(raw: bytes) -> None:
    at = mime.after_first_field(raw)
    assert at is not None
    alone, whole = mime._analyze(raw), mime._analyze(raw[:at] + ADDED + raw[at:])
    assert mime.with_fields_inserted(alone.bodystructure, at, len(ADDED)) == whole.bodystructure
    assert alone.envelope == whole.envelope
    assert (alone.subject, alone.from_text, alone.message_id) == (
        whole.subject, whole.from_text, whole.message_id)


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fields_inserted_into_a_corpus_message_only_move_its_offsets(path: Path):
    received = b"Received: from a ([192.0.2.1])\r\n\tby mx.test; Mon, 30 Nov 2026\r\n"
    raw = received + path.read_bytes()
    if raw[len(received):len(received) + 1] in (b" ", b"\t"):
        return  # it continues our field, with a bare LF: filed as a rewritten copy
    assert mime.after_first_field(raw) == len(received)
    _assert_inserted_fields_only_move_offsets(raw)


@FUZZ
@given(MIMEISH)
def test_fields_inserted_into_any_message_only_move_offsets(raw):
    for message in (raw, b"Received: x\r\n" + raw):
        if mime.after_first_field(message) is not None:
            _assert_inserted_fields_only_move_offsets(message)


def test_where_fields_can_be_inserted():
    assert mime.after_first_field(b"Received: x\r\n\r\nbody") == 13
    assert mime.after_first_field(b"Received: x\r\n y\r\n\tz\r\nSubject: s\r\n") == 21
    assert mime.after_first_field(b"Received: x\r\n") == 13
    for raw in (b"", b"just a body\r\n", b"From alice Mon Nov 30\r\nSubject: x\r\n",
                b"\xef\xbb\xbfSubject: x\r\n", b" Subject: folded\r\n", b"\r\nbody",
                b"Received: x", b"Received: x\n\r\n", b"Received: x\r\n y\nSubject: s\r\n"):
        assert mime.after_first_field(raw) is None, raw
