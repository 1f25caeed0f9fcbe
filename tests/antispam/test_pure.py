"""Pure functions: tokeniser, chi-square combining, header rewriting, file reading."""

import math

from hypothesis import given
from hypothesis import strategies as st

from apps.antispam import bayes
from apps.antispam.auth import parse_dmarc_record
from apps.antispam.corpus import is_held_out, message_from_file_bytes
from apps.antispam.dns import reverse_name
from apps.antispam.headers import header_facts, insert_after_first_field, strip_fields

MESSAGE = (
    b"Received: from a\r\n\tby b; Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    b"From: \"Cheap Pills\" <deals@pharma.example>\r\n"
    b"Subject: =?utf-8?q?Cheap_v=C3=AFagra?= now\r\n"
    b"X-Spam-Status: No, forged\r\n\tcontinued\r\n"
    b"Authentication-Results: mx.test; dkim=pass header.d=bank.example\r\n"
    b"Content-Type: text/html; charset=\"utf-8\"\r\n\r\n"
    b"<p>Visit <a href=x>http://www.pharma.example/buy?id=1</a> "
    b"supercalifragilisticexpialidocious</p>\r\n"
)


def test_tokenize_headers_body_and_urls():
    tokens = bayes.tokenize(MESSAGE)
    assert {"subject:cheap", "subject:vïagra", "from:addr:pharma.example",
            "from:name:pills", "content-type:text/html", "charset:utf-8",
            "url:pharma.example", "url:www.pharma.example", "proto:http", "visit",
            "skip:s 30", "header:subject"} <= tokens
    # Our own verdict headers (forgeable by a sender) teach nothing.
    assert not any("forged" in t or "x-spam" in t or "bank.example" in t for t in tokens)


@given(st.binary(max_size=2000))
def test_tokenize_never_raises(data):
    assert isinstance(bayes.tokenize(data), set)


def test_tokenize_survives_an_address_field_that_overflows_the_email_parser():
    # As in MimeKit's stack-overflow test message: encoded-words that decode to
    # thousands of "<" and ">" in a To field.
    words = "\t=?utf-8?Q?date=3E2017-08-20T10:08:28.617=3C/pr?=\r\n" * 3000
    data = (f"From: Alice <alice@sender.example>\r\nTo: \"t\" <t@t.example>,\r\n{words}"
            "Subject: invoice\r\n\r\nPlease pay.\r\n").encode()
    tokens = bayes.tokenize(data)
    assert {"to:addr:t.example", "from:addr:sender.example", "subject:invoice",
            "please"} <= tokens


def test_header_words_as_a_reader_sees_them():
    data = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@Mail.example>\r\n"
            b"To: undisclosed-recipients:;\r\nCc: \r\n"
            b"Subject: gef\xe4llig =?utf-8?q?caf=C3=A9?=\r\n"
            b"Received: from relay.Isp.example (1.2.3.4) by MX.example.org\r\n\r\nx\r\n")
    tokens = bayes.tokenize(data)
    # 8-bit Latin-1 and RFC 2047 words decoded; names, local parts, domains.
    assert {"subject:gefällig", "subject:café", "from:name:jürgen", "from:local:j",
            "from:addr:mail.example", "to:addr:none", "received:isp.example",
            "received:example.org", "header:cc"} <= tokens
    # An empty field names no address.
    assert "cc:addr:none" not in tokens


# Header lines as hostile mail has them: mbox "From " lines, continuations
# first, fields without a name, CR or LF alone, 8-bit bytes, encoded-words.
_HEADER_PIECES = st.sampled_from([
    "From ", "From: ", "Subject: ", "To: a <b@c.example>", ": ", " ", "\t", "x", "Ä",
    "=?utf-8?q?caf=C3=A9?=", ";", "\r\n", "\n", "\r", "Received: from a by b.example",
])


@given(st.lists(_HEADER_PIECES, max_size=30).map("".join),
       st.binary(max_size=5))
def test_header_tokens_survive_hostile_header_lines(text, raw):
    data = b"Subject: offer\r\n" + text.encode("utf-8") + raw
    tokens = bayes.tokenize(data)
    # Whatever follows, the first field is read as the sender wrote it.
    assert {"subject:offer", "header:subject"} <= tokens
    assert all(len(token) <= bayes.MAX_TOKEN_LENGTH for token in tokens)


def test_robinson_probability():
    assert bayes.token_probability(bayes.Counts(0, 0), 10, 10) == 0.5
    strong = bayes.token_probability(bayes.Counts(50, 0), 100, 100)
    weak = bayes.token_probability(bayes.Counts(1, 0), 100, 100)
    assert 0.5 < weak < strong < 1.0
    assert bayes.token_probability(bayes.Counts(0, 50), 100, 100) < 0.05


def test_chi2q_matches_the_closed_form():
    # For 2 degrees of freedom, Q(x2) = exp(-x2/2).
    assert math.isclose(bayes.chi2q(3.0, 2), math.exp(-1.5))
    assert bayes.chi2q(0.0, 10) == 1.0


def test_score_combines_clues():
    counts = {"cheap": bayes.Counts(90, 1), "pills": bayes.Counts(80, 2),
              "meeting": bayes.Counts(1, 90), "agenda": bayes.Counts(2, 70)}
    spammy = bayes.score({"cheap", "pills", "unknown"}, counts, 100, 100)
    hammy = bayes.score({"meeting", "agenda"}, counts, 100, 100)
    assert spammy.is_spam and spammy.probability > 0.9
    assert hammy.probability < 0.1
    assert [t for t, _ in spammy.clues] == ["cheap", "pills"]
    assert bayes.score({"unknown"}, counts, 100, 100).probability == 0.5


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=300))
def test_score_is_a_probability(pairs):
    counts = {str(i): bayes.Counts(s, h) for i, (s, h) in enumerate(pairs)}
    result = bayes.score(counts.keys(), counts, 1000, 1000)
    assert 0.0 <= result.probability <= 1.0


def test_strip_fields_removes_folded_fields_only_from_the_header():
    body = b"\r\nX-Spam-Status: in the body stays\r\n"
    data = b"A: 1\r\nX-Spam-Status: Yes\r\n\tmore\r\nB: 2\r\n" + body
    assert strip_fields(data, lambda name, _: name == "x-spam-status") == b"A: 1\r\nB: 2\r\n" + body


def test_insert_after_first_field():
    data = b"Received: x\r\n\ty\r\nFrom: a\r\n\r\nbody"
    assert insert_after_first_field(data, b"N: 1\r\n") == (
        b"Received: x\r\n\ty\r\nN: 1\r\nFrom: a\r\n\r\nbody")


def test_header_facts():
    facts = header_facts(b"From: a@One.example, b@two.example\r\n\r\nx")
    assert facts.from_domains == ["one.example", "two.example"]
    assert not facts.has_date and not facts.has_message_id


def test_mbox_file_becomes_a_crlf_message():
    raw = b"From someone@x Thu Nov 26 10:00:00 2026\nSubject: a\n\nline\r\nother\n"
    assert message_from_file_bytes(raw) == b"Subject: a\r\n\r\nline\r\nother\r\n"


def test_held_out_split_is_deterministic_and_about_a_quarter():
    names = [f"spam.{i:05d}.x" for i in range(2000)]
    held = [n for n in names if is_held_out(n)]
    assert held == [n for n in names if is_held_out(n)]
    assert 400 < len(held) < 600


def test_dnsbl_query_names():
    # RFC 5782 §2.1 and §2.4.
    assert reverse_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert reverse_name("2001:db8:1:2:3:4:567:89ab", "bl.test") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test")


@given(st.text(max_size=300))
def test_dmarc_parser_never_raises(text):
    record = parse_dmarc_record(text)
    assert record is None or record.policy in ("none", "quarantine", "reject")


@given(st.lists(st.sampled_from([b"A: 1", b"X-Spam-Status: x", b"\tfold", b"B:"]),
                max_size=8), st.binary(max_size=50))
def test_strip_fields_keeps_the_body_and_drops_only_the_named_field(lines, body):
    data = b"\r\n".join([b"Received: r", *lines]) + b"\r\n\r\n" + body
    result = strip_fields(data, lambda name, _: name == "x-spam-status")
    assert result.endswith(b"\r\n\r\n" + body)
    assert b"X-Spam-Status" not in result.split(b"\r\n\r\n")[0]
    assert result.startswith(b"Received: r")
