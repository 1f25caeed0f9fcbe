"""A message's HTML made safe to show, and its plain text made readable.

Pure functions: strings in, strings out. HTML goes through nh3 (ammonia) with
an allow-list of tags and attributes; on top of that, URLs are filtered per
attribute so that nothing is fetched from another host until the reader
asks (``images=True``): remote image sources and CSS ``url()`` values are
dropped, ``cid:`` references are pointed at the message's own parts. The
frame that shows the result carries a Content-Security-Policy that blocks
the same things again (see ``frame_policy``), so one mistake here is not
enough to leak a read receipt.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

import nh3

# What mail layouts use; no forms, media, frames, SVG, MathML, <style>, <link>,
# <meta> or <base>. Anything else is dropped with its attributes (its text stays).
TAGS = {
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption",
    "center", "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div",
    "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
    "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
}
# Their content is not text to show either.
DROPPED_WITH_CONTENT = {"script", "style", "title", "svg", "math", "template", "noscript",
                        "iframe", "object", "embed", "textarea", "select", "head"}
_LAYOUT = {"align", "valign", "width", "height", "bgcolor", "border", "cellpadding",
           "cellspacing", "colspan", "rowspan", "dir", "lang", "title", "style"}
ATTRIBUTES = {
    "*": _LAYOUT,
    "a": {"href", "name"},
    "img": {"src", "alt"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "table": {"summary"},
    "td": {"nowrap"},
    "th": {"nowrap", "scope"},
}
# Checked by nh3 first; the filter below narrows them per attribute.
URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
_REMOTE = ("http:", "https:")
_INLINE_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp);", re.IGNORECASE)
# A declaration that can fetch something: url(), image-set(), @import, or a
# CSS escape that could spell either of them.
_FETCHING_CSS = re.compile(r"url\s*\(|image-set|@import|\\", re.IGNORECASE)
# Anything in a style attribute that needs a closer look.
_SUSPECT_CSS = re.compile(r"[(\\@]|javascript|behavior|binding", re.IGNORECASE)
# Old browsers' ways to run code from CSS: never kept, images or not.
_ACTIVE_CSS = re.compile(r"expression\s*\(|javascript:|behavior\s*:|-moz-binding",
                         re.IGNORECASE)


_REMOTE_REFERENCE = re.compile(
    r"""(?:src|srcset|background|poster)\s*=\s*["']?\s*https?:|url\s*\(\s*["']?\s*https?:""",
    re.IGNORECASE)


def has_remote_content(text: str) -> bool:
    """Whether HTML refers to anything remote, for offering "Show images":
    a quick look, not a sanitiser (the frame's own request sanitises)."""
    return _REMOTE_REFERENCE.search(text) is not None


@dataclass(frozen=True)
class CleanHTML:
    html: str
    blocked: int  # remote resources left out (0: nothing to "Show images" for)


def clean_html(text: str, *, cid_url: Callable[[str], str | None],
               images: bool = False) -> CleanHTML:
    """Sanitise a message's HTML. ``cid_url`` maps a Content-ID to the URL of
    that part (None when the message has no such part)."""
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        # Called for every attribute of a large message: the common cases first.
        nonlocal blocked
        if attribute == "style":
            if not _SUSPECT_CSS.search(value):
                return value
            declarations = [d for d in value.split(";") if not _ACTIVE_CSS.search(d)]
            if images:
                return ";".join(declarations)
            kept = [d for d in declarations if not _FETCHING_CSS.search(d)]
            blocked += len(declarations) - len(kept)
            return ";".join(kept)
        if attribute == "href":
            return value if value.lstrip().lower().startswith(_LINK_SCHEMES) else None
        if attribute == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                return cid_url(value.strip()[4:])
            if _INLINE_IMAGE.match(lowered):
                return value
            if lowered.startswith(_REMOTE):
                if images:
                    return value
                blocked += 1
            return None
        return value

    cleaned = nh3.clean(
        text, tags=TAGS, clean_content_tags=DROPPED_WITH_CONTENT, attributes=ATTRIBUTES,
        attribute_filter=keep, url_schemes=URL_SCHEMES, url_relative="deny",
        strip_comments=True, link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}})
    return CleanHTML(cleaned, blocked)


def frame_policy(*, images: bool) -> str:
    """The Content-Security-Policy of the frame that shows a message's HTML.

    No script at all (also ``sandbox`` without allow-scripts, so opening the
    frame's URL on its own runs nothing either); inline styles, which mail
    layouts depend on; images from our origin (inline ``cid:`` parts) and
    ``data:``, and from anywhere only once the reader asked."""
    image_sources = "'self' data: http: https:" if images else "'self' data:"
    return "; ".join([
        "default-src 'none'",
        f"img-src {image_sources}",
        "style-src 'unsafe-inline'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox",
    ])


# --- plain text -------------------------------------------------------------------

_LINK = re.compile(r"\b(?:https?://|mailto:)[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


def _linkify(line: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _LINK.finditer(line):
        url = match.group(0)
        # Punctuation after a link ends the sentence, not the link.
        while url and url[-1] in _TRAILING and not (url[-1] == ")" and "(" in url):
            url = url[:-1]
        out.append(html.escape(line[pos:match.start()]))
        out.append(f'<a href="{html.escape(url)}" target="_blank" '
                   f'rel="noopener noreferrer">{html.escape(url)}</a>')
        pos = match.start() + len(url)
    out.append(html.escape(line[pos:]))
    return "".join(out)


def text_to_html(text: str) -> str:
    """Plain text as HTML: escaped, links clickable, and each run of quoted
    lines (">", RFC 3676 §4.5) folded into a <details> the reader can open."""
    out: list[str] = []
    quoted: list[str] = []

    def flush_quote() -> None:
        if quoted:
            out.append('<details class="quote"><summary>Quoted text</summary>'
                       '<blockquote>' + "\n".join(quoted) + "</blockquote></details>")
            quoted.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(">"):
            quoted.append(_linkify(line))
        else:
            flush_quote()
            out.append(_linkify(line))
    flush_quote()
    # Newlines inside a <pre>-like block (white-space: pre-wrap in the CSS).
    return "\n".join(out)


def html_to_text(text: str) -> str:
    """The visible text of HTML (for a snippet): tags and hidden content gone."""
    stripped = nh3.clean(text, tags=set(), clean_content_tags=DROPPED_WITH_CONTENT)
    return html.unescape(stripped)
