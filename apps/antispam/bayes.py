"""A Bayesian token classifier, as SpamBayes does it (pure: no I/O, no ORM).

Tokens come from a few header fields and the decoded body text. Each token's
spam probability is Robinson's f(w) (Gary Robinson, "A Statistical Approach to
the Spam Problem", 2003), and the strongest clues are combined with Fisher's
chi-square method, giving a score in [0, 1] with an "unsure" middle. The
parameters are SpamBayes' published defaults, not fitted to any corpus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from operator import itemgetter
from typing import NamedTuple

from apps.store.mime import (
    address_list,
    header_text,
    html_to_text,
    is_attachment,
    leaf_parts,
    text_leaves,
)

# SpamBayes Options.py defaults.
UNKNOWN_WORD_STRENGTH = 0.45
UNKNOWN_WORD_PROB = 0.5
MINIMUM_PROB_STRENGTH = 0.1
# Fewer clues than SpamBayes' 150: with bigrams and markup tokens many clues
# say the same thing, and counting each again makes every verdict extreme.
# Chosen by 5-fold cross-validation on the training split of the shared
# corpora (``bench/antispam.py --cross-validate``), never on the held-out part.
MAX_DISCRIMINATORS = 30
SPAM_CUTOFF = 0.90
HAM_CUTOFF = 0.20
# The raw chi-square score from which mail is spam, chosen by the same
# cross-validation: the lowest cut-off with at most 0.3 % of the ham at or
# above it (just above the out-of-fold ham that scored 0.52252). Scores are
# rescaled so that this cut-off falls on SPAM_CUTOFF, the point where the
# server's default threshold (9.0 = 10 × 0.90) files to Junk.
RAW_SPAM_CUTOFF = 0.5226

MAX_TOKENS = 3000  # per message; long messages say what they are early enough
MAX_BODY_CHARS = 200_000
MAX_TOKEN_LENGTH = 100

# The patterns of markup and URLs run over lowercased text, and match in the
# case they are written in: a pattern that ignores case cannot skip ahead to
# where its first letter occurs, and takes four times as long.
_URL = re.compile(r"(https?|ftp)://([^\s/?#<>\"']+)([^\s<>\"']*)")
_URL_PIECES = re.compile(r"[/.?=&%_-]+")
_STRIP = "\"'()[]{}<>.,;:!?*"
# Headers we add ourselves (or that a sender could forge to look like ours)
# say what the filter already thought: learning from them would feed back.
_OWN_HEADERS = ("x-spam-", "authentication-results", "received-spf", "x-mailhost-")


def _words(text: str, prefix: str = "") -> set[str]:
    """SpamBayes' word rule: 3–12 characters kept, longer ones summarised."""
    words = set()
    # Lowercasing never makes or removes whitespace or the stripped ASCII
    # punctuation, so one lower() of the whole text is the same as one a word;
    # and a word met again adds nothing to the set.
    for raw in set(text.lower().split()):
        word = raw.strip(_STRIP)
        length = len(word)
        if 3 <= length <= 12:
            words.add(prefix + word)
        elif length > 12:
            words.add(f"{prefix}skip:{word[0]} {length // 10 * 10}")
    return words


def _text_words(lowered: str) -> set[str]:
    """``_words`` of the lowercased text and the pairs of neighbouring words,
    which say more than either word ("click here", "remove me"; kept because
    the cross-validated figures said so), from one split of the text."""
    stripped = [raw.strip(_STRIP) for raw in lowered.split()]
    words = [word for word in stripped if 3 <= len(word) <= 12]
    tokens = set(words)
    tokens.update(f"skip:{word[0]} {len(word) // 10 * 10}" for word in set(stripped)
                  if len(word) > 12)
    tokens.update(f"bi:{a} {b}" for a, b in pairwise(words))
    return tokens


def _url_tokens(urls: Iterable[tuple[str, str, str]]) -> Iterable[str]:
    """Tokens of (scheme, host, rest) of lowercased URLs."""
    for scheme, host, rest in urls:
        yield f"proto:{scheme}"
        parts = host.rpartition("@")[2].split(":")[0].split(".")
        for i in range(len(parts)):
            yield "url:" + ".".join(parts[i:])
        for piece in _URL_PIECES.split(rest)[:10]:
            if 2 < len(piece) <= 20:
                yield "url:" + piece


def _body_tokens(text: str) -> set[str]:
    """URLs as their parts, and the words of the text around them."""
    # One pass of the URL pattern: split() gives the text between URLs at
    # every fourth place, with each URL's three groups in between.
    pieces = _URL.split(text.lower())
    tokens = _text_words(" ".join(pieces[::4]))
    tokens.update(_url_tokens(zip(pieces[1::4], pieces[2::4], pieces[3::4], strict=True)))
    return tokens


_CHARSET = re.compile(r'charset="?([\w.-]+)', re.I)
_RECEIVED_HOST = re.compile(r"(?:from|by) ([\w.-]+\.\w+)")  # over lowercased text
_ADDRESS_FIELDS = frozenset(("from", "reply-to", "to", "cc", "sender"))


def _header_tokens(fields: list[tuple[str, bytes]]) -> Iterable[str]:
    """Tokens of the header fields the MIME parser read (lowercased names,
    unfolded raw values): one pass over the bytes serves both."""
    names: set[str] = set()
    for name, raw in fields:
        if name.startswith(_OWN_HEADERS):
            continue
        names.add(name)
        if name == "subject":
            yield from _words(header_text(raw), "subject:")
        elif name in _ADDRESS_FIELDS:
            addresses = address_list(raw)
            if not addresses and raw.strip():  # "undisclosed-recipients:;"
                yield f"{name}:addr:none"
            for display, local, domain in addresses:
                yield f"{name}:addr:{domain.lower() or 'none'}"
                if local:
                    yield f"{name}:local:{local.lower()}"
                yield from _words(display, f"{name}:name:")
        elif name == "content-type":
            value = raw.decode("latin-1")
            yield "content-type:" + value.split(";")[0].strip().lower()
            charset = _CHARSET.search(value)
            if charset:
                yield "charset:" + charset.group(1).lower()
        elif name in ("x-mailer", "user-agent"):
            yield "x-mailer:" + " ".join(header_text(raw).lower().split())[:40]
        elif name == "message-id":
            yield ("message-id:@"
                   + raw.decode("latin-1").rpartition("@")[2].strip(" <>\t\r\n").lower())
        elif name == "received":
            for host in _RECEIVED_HOST.findall(raw.decode("latin-1").lower())[:2]:
                yield "received:" + ".".join(host.split(".")[-2:])
    for name in names:
        yield "header:" + name


def tokenize(data: bytes) -> set[str]:
    """The set of tokens of a message (each counted once, as SpamBayes trains)."""
    fields, root, leaves = text_leaves(data, limit=MAX_BODY_CHARS)
    tokens = set(_header_tokens(fields))
    tokens.update(_structure_tokens(root))
    texts = []
    html_only = True
    for part, text in leaves:
        if part["subtype"] == "html":
            html, text = text, html_to_text(text)
            tokens.update(_html_tokens(html, text))
        else:
            html_only = False
        texts.append(text)
    if leaves and html_only:
        tokens.add("html:only")
    text = "\n".join(texts)
    tokens.update(_body_tokens(text))
    if not text.isascii():
        eight_bit = len(text) - len(text.encode("ascii", "ignore"))  # characters > U+007F
        tokens.add(f"8bit%:{round(100 * eight_bit / len(text))}")
    if len(tokens) > MAX_TOKENS:
        tokens = set(sorted(tokens)[:MAX_TOKENS])
    if max(map(len, tokens), default=0) > MAX_TOKEN_LENGTH:
        tokens = {t[:MAX_TOKEN_LENGTH] for t in tokens}
    return tokens


def _structure_tokens(root: dict) -> Iterable[str]:
    """What the MIME structure says: the kinds of parts, their transfer
    encodings and character sets, and the file types of attachments."""
    yield f"mime:{root['type']}/{root['subtype']}"
    leaves = leaf_parts(root)
    yield f"mime:parts:{min(len(leaves), 10)}"
    for _, part in leaves:
        kind = f"{part['type']}/{part['subtype']}"
        yield f"part:{kind}"
        yield f"cte:{part['encoding'].lower()}:{kind}"
        charset = next((v for k, v in part["params"] if k.lower() == "charset"), "")
        if charset:
            yield f"charset:{charset.lower()}"
        if is_attachment(part):
            name = next((v for k, v in (part["disposition"] or ["", []])[1] or ()
                         if k.lower() == "filename"), "") or next(
                (v for k, v in part["params"] if k.lower() == "name"), "")
            yield "attach:ext:" + (name.rpartition(".")[2].lower()[:10] if "." in name
                                   else "none")


# No \b before the attribute's name: it would take the pattern's fast
# search for its first letters away (three times as slow), and "xhref=" is
# seen as seldom as it matters.
_HREF = re.compile(r"""(?:href|src|action)\s*=\s*["']?([^"'\s>]+)""")
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01](?:px|pt)?\b"
    r"|<font[^>]*size\s*=\s*[\"']?[-]?[01]\b")
_HTML_FEATURES = {
    "form": re.compile(r"<form\b"),
    "input": re.compile(r"<input\b"),
    "script": re.compile(r"<script\b"),
    "iframe": re.compile(r"<i?frame\b"),
    "font-color": re.compile(r"<font[^>]*color"),
    "white-text": re.compile(r"color\s*[:=]\s*[\"']?(?:#?fff(?:fff)?\b|white)"),
    "bgcolor": re.compile(r"bgcolor"),
    "center": re.compile(r"<center\b"),
    "table": re.compile(r"<table\b"),
    "map": re.compile(r"<area\b"),
    "base64-img": re.compile(r"src\s*=\s*[\"']?data:"),
}
_IMG = re.compile(r"<img\b")


def _html_tokens(html: str, text: str) -> Iterable[str]:
    """What HTML markup says besides its ``text``: where its links and images
    point (which the text alone loses), forms, hidden text, image-only mail."""
    html = html.lower()
    yield from _url_tokens(m for href in _HREF.findall(html[:MAX_BODY_CHARS])
                           if (m := _URL.match(href)) and (m := m.groups()))
    if _HIDDEN_STYLE.search(html):
        yield "html:hidden-text"
    for name, pattern in _HTML_FEATURES.items():
        if pattern.search(html):
            yield "html:" + name
    images = len(_IMG.findall(html))
    if images:
        yield f"html:img:{min(images, 5)}"
        if len(text.split()) < 10 * images:
            yield "html:mostly-images"

class Counts(NamedTuple):
    spam: int
    ham: int


def token_probability(counts: tuple[int, int], spam_total: int, ham_total: int) -> float:
    """Robinson's f(w): the Graham ratio shrunk towards 0.5 for rare tokens."""
    return token_probabilities([counts], spam_total, ham_total)[0]


def token_probabilities(counts: Iterable[tuple[int, int]], spam_total: int, ham_total: int
                        ) -> list[float]:
    """token_probability of many tokens at once (one loop, no call per token)."""
    strength_x = UNKNOWN_WORD_STRENGTH * UNKNOWN_WORD_PROB
    probabilities = []
    for spam, ham in counts:
        spam_ratio = spam / spam_total if spam_total else 0.0
        ham_ratio = ham / ham_total if ham_total else 0.0
        if spam_ratio + ham_ratio == 0:
            probabilities.append(UNKNOWN_WORD_PROB)
            continue
        prob = spam_ratio / (spam_ratio + ham_ratio)
        n = spam + ham
        probabilities.append((strength_x + n * prob) / (UNKNOWN_WORD_STRENGTH + n))
    return probabilities


# A clue as ``judge`` takes it: (|f(w) - 0.5|, token, f(w)), which sorts by
# strength, ties broken by the token, the same way every time.
Clue = tuple[float, str, float]


def strength_and_probability(counts: tuple[int, int], spam_total: int, ham_total: int
                             ) -> tuple[float, float] | None:
    """(|f(w) - 0.5|, f(w)) of a token with these counts, None where f(w) is
    too near 0.5 to count (SpamBayes' minimum_prob_strength)."""
    f = token_probability(counts, spam_total, ham_total)
    strength = abs(f - 0.5)
    return (strength, f) if strength >= MINIMUM_PROB_STRENGTH else None


def chi2q(x2: float, degrees: int) -> float:
    """P(chi-square with ``degrees`` (even) degrees of freedom >= x2)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


@dataclass(frozen=True)
class Score:
    probability: float  # calibrated: SPAM_CUTOFF and above is spam
    clues: list[tuple[str, float]]  # strongest first
    raw: float = 0.5  # the chi-square score before calibrated()
    starter: bool = False  # judged (partly) on the day-one model

    @property
    def is_spam(self) -> bool:
        return self.probability >= SPAM_CUTOFF


def score(tokens: Iterable[str], counts: Mapping[str, Counts], spam_total: int,
          ham_total: int) -> Score:
    """A message's score from its tokens and a model's counts."""
    unknown = Counts(0, 0)
    return combine((token, token_probability(counts.get(token, unknown), spam_total, ham_total))
                   for token in tokens)


def combine(probabilities: Iterable[tuple[str, float]]) -> Score:
    """The score of (token, f(w)) pairs."""
    return judge([(strength, token, f) for token, f in probabilities
                  if (strength := abs(f - 0.5)) >= MINIMUM_PROB_STRENGTH])


def judge(clues: Iterable[Clue]) -> Score:
    """Fisher/Robinson chi-square combining of the strongest ``clues``
    (SpamBayes' chi2_spamprob): S and H are how unlike ham and unlike spam
    they are."""
    clues = list(clues)
    if len(clues) > MAX_DISCRIMINATORS:
        # Those as strong as the MAX_DISCRIMINATORS-th strongest, found by
        # sorting bare floats: sorting the (strength, token, f) tuples of a
        # few hundred clues costs twice as much.
        weakest = sorted(map(itemgetter(0), clues), reverse=True)[MAX_DISCRIMINATORS - 1]
        clues = [clue for clue in clues if clue[0] >= weakest]
    # Ties in strength go by the token, so that the same message gets the
    # same clues in every process.
    strongest = sorted(clues, reverse=True)[:MAX_DISCRIMINATORS]
    if not strongest:
        return Score(0.5, [])  # calibrated(0.5) is 0.5
    # Products of many small numbers underflow: keep mantissa and exponent apart.
    h_mantissa = s_mantissa = 1.0
    h_exponent = s_exponent = 0
    for _, _, f in strongest:
        s_mantissa *= 1.0 - f
        h_mantissa *= f
        if s_mantissa < 1e-200:
            s_mantissa, e = math.frexp(s_mantissa)
            s_exponent += e
        if h_mantissa < 1e-200:
            h_mantissa, e = math.frexp(h_mantissa)
            h_exponent += e
    log_s = math.log(s_mantissa) + s_exponent * math.log(2)
    log_h = math.log(h_mantissa) + h_exponent * math.log(2)
    n = len(strongest)
    spamminess = 1.0 - chi2q(-2.0 * log_s, 2 * n)
    hamminess = 1.0 - chi2q(-2.0 * log_h, 2 * n)
    raw = (spamminess - hamminess + 1.0) / 2.0
    return Score(calibrated(raw), [(token, f) for _, token, f in strongest], raw)


def calibrated(raw: float) -> float:
    """The chi-square score moved piecewise-linearly, order kept, so that
    RAW_SPAM_CUTOFF becomes SPAM_CUTOFF while 0, 0.5 (no opinion) and 1 stay:
    mail the classifier knows nothing about still weighs 5 points, not 8.7."""
    knots = ((0.0, 0.0), (0.5, 0.5), (RAW_SPAM_CUTOFF, SPAM_CUTOFF), (1.0, 1.0))
    for (x0, y0), (x1, y1) in pairwise(knots):
        if raw <= x1:
            return y0 + (y1 - y0) * (raw - x0) / (x1 - x0)
    return 1.0
