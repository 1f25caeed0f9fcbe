"""The pure parts of the webmail: the sanitiser with hostile HTML, plain text
made readable, and the search box's language."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.imap.parser import SearchKey
from apps.webmail.query import QueryError, parse
from apps.webmail.sanitize import clean_html, frame_policy, html_to_text, text_to_html


def clean(html: str, *, images: bool = False) -> str:
    return clean_html(html, cid_url=lambda cid: f"https://mail.test/inline/{cid}/",
                      images=images).html


# Each payload must come out without script, handlers, or anything that fetches
# from another host before the reader asks.
XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    '<body onload="alert(1)">',
    '<a href="javascript:alert(1)">click</a>',
    '<a href="JaVaScRiPt:alert(1)">click</a>',
    '<a href="  javascript:alert(1)">click</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">click</a>',
    '<a href="vbscript:msgbox(1)">click</a>',
    '<svg onload="alert(1)"><script>alert(1)</script></svg>',
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    '<math><mtext><script>alert(1)</script></mtext></math>',
    '<div style="background:url(https://evil.example/track.gif)">x</div>',
    '<div style="background-image: URL( \'https://evil.example/t.gif\' )">x</div>',
    '<div style="background:u\\72l(https://evil.example/t.gif)">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    "<style>@import url(https://evil.example/x.css); body{background:url(https://evil.example/b)}</style>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<base href="https://evil.example/">',
    '<form action="https://evil.example/"><input name="password"><button>Go</button></form>',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<object data="https://evil.example/x.swf"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<iframe src="https://evil.example/"></iframe>',
    '<img srcset="https://evil.example/1x.png 1x, https://evil.example/2x.png 2x">',
    '<img src="https://evil.example/pixel.gif" width="1" height="1">',
    '<picture><source srcset="https://evil.example/p.webp"><img src="x.png"></picture>',
    '<video poster="https://evil.example/p.png" src="https://evil.example/v.mp4"></video>',
    '<audio src="https://evil.example/a.mp3"></audio>',
    '<table background="https://evil.example/bg.png"><tr><td>x</td></tr></table>',
    '<body background="https://evil.example/bg.png">x</body>',
    '<input type="image" src="https://evil.example/i.png">',
    '<img src="/signout/">',
    '<a href="/mail/act/">relative</a>',
    "<!--<img src=https://evil.example/c.png>-->",
    '<img src="https://evil.example/a.png"/onerror=alert(1)>',
    "<<script>script>alert(1)<</script>/script>",
    '<div id="x" class="y" data-x="1" onclick="alert(1)">click</div>',
    '<template><img src="https://evil.example/t.png"></template>',
    '<noscript><img src="https://evil.example/n.png"></noscript>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
]

_REMOTE = re.compile(r"evil\.example|javascript:|vbscript:|data:text", re.IGNORECASE)
_ACTIVE = re.compile(r"<\s*(script|svg|math|iframe|object|embed|form|input|base|meta|link|style"
                     r"|video|audio|source|template)\b|\son[a-z]+\s*=|srcset|expression\(",
                     re.IGNORECASE)


@pytest.mark.parametrize("payload", XSS)
def test_hostile_html_keeps_no_script_and_fetches_nothing(payload: str) -> None:
    cleaned = clean(payload)
    assert not _ACTIVE.search(cleaned), cleaned
    assert not _REMOTE.search(cleaned), cleaned
    assert "/signout/" not in cleaned and 'href="/mail' not in cleaned


def test_remote_images_are_counted_and_come_back_only_when_asked() -> None:
    html = ('<p style="color:red;background:url(https://cdn.example/b.png)">Hi</p>'
            '<img src="https://cdn.example/logo.png" alt="Logo">')
    blocked = clean_html(html, cid_url=lambda _c: None)
    assert blocked.blocked == 2
    assert "cdn.example" not in blocked.html
    assert 'style="color:red"' in blocked.html
    assert 'alt="Logo"' in blocked.html
    shown = clean(html, images=True)
    assert 'src="https://cdn.example/logo.png"' in shown
    assert "url(https://cdn.example/b.png)" in shown


def test_inline_images_point_at_the_message_and_links_open_outside() -> None:
    cleaned = clean('<img src="cid:logo@x"><img src="data:image/png;base64,iVBOR">'
                    '<a href="https://example.org/">site</a><a href="mailto:a@b.example">m</a>')
    assert 'src="https://mail.test/inline/logo@x/"' in cleaned
    assert 'src="data:image/png;base64,iVBOR"' in cleaned
    assert '<a href="https://example.org/" target="_blank" rel="noopener noreferrer">' in cleaned
    assert 'href="mailto:a@b.example"' in cleaned
    # An unknown Content-ID gives no URL at all.
    assert "src" not in clean_html('<img src="cid:nope">', cid_url=lambda _c: None).html


def test_frame_policy_allows_no_script_and_remote_images_only_when_asked() -> None:
    blocked, shown = frame_policy(images=False), frame_policy(images=True)
    for policy in (blocked, shown):
        assert "default-src 'none'" in policy
        assert "script" not in policy.replace("allow-scripts", "X")  # no script-src at all
        assert "allow-scripts" not in policy
        assert "form-action 'none'" in policy
    assert "img-src 'self' data:;" in blocked
    assert "https:" in shown and "https:" not in blocked


def test_plain_text_links_quotes_and_escaping() -> None:
    html = text_to_html("See https://example.org/a?b=1&c=2.\n> old <b>text</b>\n> more\nBye\r\n")
    assert ('<a href="https://example.org/a?b=1&amp;c=2" target="_blank" '
            'rel="noopener noreferrer">https://example.org/a?b=1&amp;c=2</a>.') in html
    assert "<details class=\"quote\"><summary>Quoted text</summary>" in html
    assert "&lt;b&gt;text&lt;/b&gt;" in html and "<b>" not in html
    assert html.count("<details") == 1
    assert text_to_html('<script>alert("x")</script>') == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;")


def test_html_to_text_for_snippets() -> None:
    assert html_to_text("<style>p{}</style><p>Tom &amp; Jerry</p><script>x</script>") == \
        "Tom & Jerry"


# --- the search language --------------------------------------------------------


def test_query_prefixes_become_search_keys() -> None:
    key = parse('from:ann subject:"budget 2025" has:attachment after:2025-01-01 '
                "before:2025-02-01 -is:unread report")
    assert key == SearchKey("AND", (
        SearchKey("FROM", ("ann",)), SearchKey("SUBJECT", ("budget 2025",)),
        SearchKey("HASATTACHMENT"), SearchKey("SINCE", (date(2025, 1, 1),)),
        SearchKey("BEFORE", (date(2025, 2, 1),)),
        SearchKey("NOT", (SearchKey("FLAG", ("\\Seen", False)),)),
        SearchKey("TEXT", ("report",))))


@pytest.mark.parametrize(("query", "expected"), [
    ("", None),
    ("   ", None),
    ("hello", SearchKey("TEXT", ("hello",))),
    (b"to:b\xc3\xa9a", SearchKey("TO", ("béa",))),
    (b"\xff\xfe", SearchKey("TEXT", ("\ufffd\ufffd",))),
    ("https://example.org/x", SearchKey("TEXT", ("https://example.org/x",))),
    ('"two words"', SearchKey("TEXT", ("two words",))),
    ("FROM:Ann", SearchKey("FROM", ("Ann",))),
    ("is:flagged", SearchKey("FLAG", ("\\Flagged", True))),
])
def test_query_cases(query: str | bytes, expected: SearchKey | None) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize("query", ["after:yesterday", "before:2025-13-01", "has:pictures",
                                   "is:purple", "x" * 501, " ".join(["a"] * 21)])
def test_bad_queries_say_what_is_wrong(query: str) -> None:
    with pytest.raises(QueryError):
        parse(query)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_query_parses_or_says_why(query: str | bytes) -> None:
    try:
        key = parse(query)
    except QueryError as error:
        assert str(error)
        return
    assert key is None or isinstance(key, SearchKey)


# --- the store and IMAP helpers the webmail reads with ------------------------------


def test_leaf_parts_carry_the_section_find_part_takes() -> None:
    from email.message import EmailMessage

    from apps.store import mime

    message = EmailMessage()
    message["Subject"] = "parts"
    message.set_content("plain")
    message.add_alternative("<p>html</p>", subtype="html")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    structure = mime.analyze(bytes(message)).bodystructure
    leaves = mime.leaf_parts(structure)
    assert [section for section, _part in leaves] == [[1, 1], [1, 2], [2]]
    for section, part in leaves:
        assert mime.find_part(structure, section) == part
    assert [mime.is_attachment(part) for _s, part in leaves] == [False, False, True]
    assert mime.has_attachment(structure)
    single = mime.analyze(b"Subject: x\r\n\r\nbody\r\n").bodystructure
    assert mime.leaf_parts(single) == [([1], single)] and not mime.has_attachment(single)


def test_reference_threads_nest_replies_in_reading_order() -> None:
    from datetime import UTC, datetime

    from apps.imap.ordering import reference_threads

    def row(message_id: str, refs: list[str], day: int, subject: str = "Trip") -> dict:
        return {"blob__message_id": message_id, "blob__references": refs,
                "blob__in_reply_to": refs[-1] if refs else "", "blob__subject": subject,
                "blob__sent_date": datetime(2025, 1, day, tzinfo=UTC),
                "internal_date": datetime(2025, 1, day, tzinfo=UTC)}

    items = [(1, row("<a>", [], 1)), (2, row("<b>", ["<a>"], 2, "Re: Trip")),
             (3, row("<c>", ["<a>", "<b>"], 3, "Re: Trip")),
             (4, row("<d>", ["<a>"], 4, "Re: Trip")), (5, row("<z>", [], 5, "Other"))]
    assert reference_threads(items) == [[(1, 0), (2, 1), (3, 2), (4, 1)], [(5, 0)]]
