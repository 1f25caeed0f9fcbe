"""What the tokeniser makes of markup, MIME structure and word pairs
(pure: byte strings in, tokens out)."""

import base64

from hypothesis import given
from hypothesis import strategies as st

from apps.antispam import bayes
from apps.store import mime
from tests.antispam.conftest import message

HTML_ONLY = message("deals@shop.example", subject="Offer", extra=(
    "Content-Type: text/html; charset=utf-8\r\n"), body=(
    '<html><body><p>Click here to claim</p>'
    '<a href="http://login.bank.example.phish.co.uk/verify?id=1">your bank</a>'
    '<img src="http://img.tracker.example/a.gif"><img src="cid:x">'
    '<div style="display:none">lorem ipsum filler</div>'
    '<form action="http://collect.example/p"><input name=pin></form></body></html>'))


def test_link_targets_in_markup_are_tokens_though_the_text_never_shows_them():
    tokens = bayes.tokenize(HTML_ONLY)
    assert {"url:phish.co.uk", "url:login.bank.example.phish.co.uk", "url:verify",
            "url:tracker.example", "url:collect.example", "proto:http"} <= tokens
    # The link's visible words stay words.
    assert {"click", "your", "bank"} <= tokens


def test_markup_features_hidden_text_forms_and_html_only_mail():
    tokens = bayes.tokenize(HTML_ONLY)
    assert {"html:only", "html:hidden-text", "html:form", "html:input", "html:img:2",
            "part:text/html"} <= tokens
    assert "html:script" not in tokens


def test_image_only_mail():
    data = (b"Content-Type: text/html\r\n\r\n<img src=\"http://x.example/1.png\">"
            b"<img src=\"http://x.example/2.png\"><p>See</p>\r\n")
    assert "html:mostly-images" in bayes.tokenize(data)
    assert "html:mostly-images" not in bayes.tokenize(HTML_ONLY.replace(
        b"Click here to claim", b"a long letter " * 20))


def test_word_pairs():
    tokens = bayes.tokenize(b"Subject: x\r\n\r\nClick here, now! To be removed.\r\n")
    assert {"bi:click here", "bi:here now"} <= tokens
    # Words under 3 characters are left out, and the pair is made without them.
    assert "bi:now removed" in tokens and not any(t.startswith("bi:to") for t in tokens)


def test_structure_attachments_encodings_and_charsets():
    payload = base64.b64encode(b"MZ\x90\x00binary").decode()
    data = (
        "From: a@b.example\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/plain; charset=koi8-r\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nsee attached=20file\r\n"
        "--XX\r\nContent-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n\r\n"
        f"{payload}\r\n--XX--\r\n").encode()
    tokens = bayes.tokenize(data)
    assert {"mime:multipart/mixed", "mime:parts:2", "part:text/plain",
            "part:application/octet-stream", "cte:base64:application/octet-stream",
            "cte:quoted-printable:text/plain", "charset:koi8-r", "attach:ext:exe",
            "attached", "bi:see attached"} <= tokens
    assert "html:only" not in tokens


def test_text_leaves_gives_every_alternative_with_its_markup():
    data = (b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
            b"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<b>caf=E9</b>\r\n--b--\r\n")
    _fields, root, leaves = mime.text_leaves(data)
    assert root["subtype"] == "alternative"
    assert [(part["subtype"], text.strip()) for part, text in leaves] == [
        ("plain", "plain words"), ("html", "<b>café</b>")]
    assert mime.html_to_text("<b>caf&eacute;</b><p>x") == "café\nx"


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_calibration_keeps_the_order_and_moves_the_cutoff(a, b):
    assert 0.0 <= bayes.calibrated(a) <= 1.0
    if a < b:
        assert bayes.calibrated(a) <= bayes.calibrated(b)
    assert bayes.calibrated(bayes.RAW_SPAM_CUTOFF) == bayes.SPAM_CUTOFF
    assert bayes.calibrated(0.5) == 0.5


# Pieces of hostile MIME: boundaries that never close, markup cut in the
# middle, bogus charsets and encodings, 8-bit bytes.
_PIECES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=q\r\n", b"--q\r\n", b"--q--\r\n",
    b"Content-Type: text/html; charset=bogus\r\n", b"Content-Type: text/plain\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename=\"a.b.exe\"\r\n", b"\r\n",
    b"<a href=\"http://", b"x.example/", b"\">", b"<img src=", b"<form", b"<div style=\"",
    b"display:none", b"=E9=", b"\xff\xfe", b"word ", b"http://[::1", b"&#99999999999;",
])


@given(st.lists(_PIECES | st.binary(max_size=20), max_size=40).map(b"".join))
def test_tokenize_never_raises_on_hostile_mime(data):
    tokens = bayes.tokenize(data)
    assert len(tokens) <= bayes.MAX_TOKENS
    assert all(len(token) <= bayes.MAX_TOKEN_LENGTH for token in tokens)


def test_address_list_gives_names_local_parts_and_domains():
    value = (b'"Doe, J." <j.doe@Example.org>, =?utf-8?q?J=C3=BCrgen?= <j@x.example>, '
             b"undisclosed:;, bare@y.example, nodomain")
    assert mime.address_list(value) == [
        ("Doe, J.", "j.doe", "Example.org"), ("J\u00fcrgen", "j", "x.example"),
        ("", "bare", "y.example"), ("", "nodomain", "")]


def test_header_text_reads_utf8_else_latin1_and_decodes_encoded_words():
    assert mime.header_text(b"caf\xc3\xa9 =?iso-8859-1?q?d=E9j=E0?=") == "caf\u00e9 d\u00e9j\u00e0"
    assert mime.header_text(b"gef\xe4llig") == "gef\u00e4llig"


@given(st.binary(max_size=300))
def test_address_list_and_header_text_take_any_bytes(value):
    assert all(isinstance(part, str) for address in mime.address_list(value)
               for part in address)
    assert isinstance(mime.header_text(value), str)
