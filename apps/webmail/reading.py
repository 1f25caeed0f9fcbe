"""What the reading pane shows of a message: which part is its body, its
attachments, the sender-authentication results and spam verdict our own
checks wrote into it, and its conversation.

Everything is taken from the body structure the store parsed once at
delivery (``Blob.bodystructure``, byte offsets into the blob) and the
message bytes; nothing here writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.db.models import Q

from apps.antispam import services as antispam
from apps.directory.models import Mailbox
from apps.imap import ordering
from apps.store import mime
from apps.store.models import Message

Part = dict[str, Any]


def section_text(section: list[int]) -> str:
    return ".".join(map(str, section))


def parse_section(text: str) -> list[int] | None:
    if not re.fullmatch(r"[1-9][0-9]{0,4}(?:\.[1-9][0-9]{0,4}){0,20}", text):
        return None
    return [int(number) for number in text.split(".")]


def _body_in(node: Part, section: list[int]) -> tuple[list[int], Part] | None:
    """RFC 2046 §5.1.4: of alternatives the richest we show (HTML, then
    plain); of a related group its root; of a mixed one the first text."""
    children = node.get("parts") or []
    if children:
        numbered = [([*section, n], child) for n, child in enumerate(children, 1)]
        if node["subtype"] == "alternative":
            # The last alternative is the sender's preferred one; HTML (perhaps
            # inside a related group with its images) over plain text.
            found = [body for path, child in reversed(numbered)
                     if (body := _body_in(child, path)) is not None]
            html = [body for body in found if body[1]["subtype"] == "html"]
            return (html or found or [None])[0]
        if node["subtype"] == "related":
            numbered = numbered[:1]
        for path, child in numbered:
            found = _body_in(child, path)
            if found is not None:
                return found
        return None
    if node["type"] == "text" and node["subtype"] in ("plain", "html") \
            and not mime.is_attachment(node):
        return section, node
    return None


def body_part(structure: Part) -> tuple[list[int], Part] | None:
    """The section and part shown as the message's body."""
    if structure.get("parts"):
        return _body_in(structure, [])
    return _body_in(structure, [1])


@dataclass(frozen=True)
class Attachment:
    section: str
    filename: str
    content_type: str
    size: int  # decoded bytes (estimated for base64 without decoding)
    content_id: str


def filename_of(part: Part, section: str) -> str:
    name = mime.part_filename(part)
    if name:
        return name.replace("/", "_").replace("\\", "_")
    if part["type"] == "message":
        return f"message-{section}.eml"
    return f"part-{section}.{part['subtype'] or 'bin'}"


def attachments(structure: Part) -> list[Attachment]:
    out = []
    for section, part in mime.leaf_parts(structure):
        if not mime.is_attachment(part):
            continue
        size = part["size"]
        if part["encoding"].lower() == "base64":
            size = size * 3 // 4
        text = section_text(section)
        out.append(Attachment(text, filename_of(part, text),
                              f"{part['type']}/{part['subtype']}", size,
                              (part.get("id") or "").strip("<> ")))
    return out


def content_ids(structure: Part) -> dict[str, str]:
    """Content-ID (without angle brackets) to section, for ``cid:`` links."""
    return {(part["id"] or "").strip().strip("<>"): section_text(section)
            for section, part in mime.leaf_parts(structure) if part.get("id")}


# --- our own verdicts in the header -----------------------------------------------

_FIELD = re.compile(rb"^([A-Za-z0-9-]+):[ \t]*(.*?)(?=\r?\n(?![ \t])|\Z)",
                    re.MULTILINE | re.DOTALL)
_RESULT = re.compile(r"\b(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
_GOOD = {"pass"}
_BAD = {"fail", "permerror", "softfail"}


@dataclass(frozen=True)
class Badge:
    label: str
    tone: str  # "ok", "bad" or "warn" (the shared CSS's badge classes)


def header_fields(raw: bytes, structure: Part) -> list[tuple[str, str]]:
    """The top-level header fields, unfolded, names lower-cased."""
    block = raw[:structure["body_start"]]
    return [(name.decode("ascii").lower(),
             re.sub(rb"\r?\n[ \t]+", b" ", value).decode("utf-8", "replace").strip())
            for name, value in _FIELD.findall(block)]


def verdict_badges(fields: list[tuple[str, str]]) -> list[Badge]:
    """SPF/DKIM/DMARC from the Authentication-Results field our server wrote
    (RFC 8601 §5: only results from our own authserv-id are trusted; the
    antispam filter strips forged ones) and the spam verdict."""
    badges: list[Badge] = []
    seen: set[str] = set()
    ours = settings.MAILHOST_HOSTNAME.lower()
    for name, value in fields:
        if name == "authentication-results" and value.split(";", 1)[0].strip().lower() == ours:
            for method, result in _RESULT.findall(value):
                method, result = method.upper(), result.lower()
                if method in seen:
                    continue
                seen.add(method)
                tone = "ok" if result in _GOOD else "bad" if result in _BAD else "warn"
                badges.append(Badge(f"{method} {result}", tone))
        elif name == "x-spam-status":
            score = re.search(r"score=(-?[0-9.]+)", value)
            figure = f" ({score.group(1)})" if score else ""
            if value.lower().startswith("yes"):
                badges.append(Badge(f"Spam{figure}", "bad"))
            else:
                badges.append(Badge(f"Not spam{figure}", "ok"))
    return badges


@dataclass(frozen=True)
class Reason:
    name: str  # the test's name, as X-Spam-Status gives it
    text: str  # what it means, for the reader


@dataclass(frozen=True)
class SpamVerdict:
    """Our filter's verdict as it wrote it into the message (X-Spam-Status,
    X-Spam-Clues; a sender's forged ones are stripped on arrival)."""

    junk: bool
    score: str
    required: str
    reasons: list[Reason]
    clues: list[str]  # the classifier's words that pointed to spam, strongest first


_STATUS = re.compile(r"^(yes|no)\b.*?score=(-?[0-9.]+)\s+required=(-?[0-9.]+)\s+tests=(\S*)",
                     re.IGNORECASE)


def spam_verdict(fields: list[tuple[str, str]]) -> SpamVerdict | None:
    """The verdict our filter wrote, or None for a message it did not check."""
    status = next((value for name, value in fields if name == "x-spam-status"), None)
    match = _STATUS.match(status or "")
    if match is None:
        return None
    reasons = []
    for test in filter(None, match.group(4).split(",")):
        if test.startswith("BAYES_") and test[6:].isdigit():
            reasons.append(Reason(test, f"The classifier rates it {int(test[6:])} % spam, "
                                        "from words like those below"))
        elif test in antispam.RULE_DESCRIPTIONS:
            reasons.append(Reason(test, antispam.RULE_DESCRIPTIONS[test]))
    clues = next((value for name, value in fields if name == "x-spam-clues"), "")
    return SpamVerdict(
        junk=match.group(1).lower() == "yes", score=match.group(2), required=match.group(3),
        reasons=reasons,
        clues=[token for token, f in antispam.parse_clues(clues) if f > 0.5][:CLUES_SHOWN])


CLUES_SHOWN = 5
# The tests that say the sender is not who the From field makes it look like.
_IMPERSONATION = ("FORGED_LOCAL_SENDER", "FROM_LOOKALIKE_DOMAIN", "FROM_NAME_IMITATES_DOMAIN",
                  "FROM_NAME_IMITATES_USER")


def sender_warnings(verdict: SpamVerdict | None, fields: list[tuple[str, str]]) -> list[str]:
    """What the reading pane warns of when the mail may not be from whom it
    claims: above all, mail claiming one of our own domains that came from
    outside with neither SPF nor DKIM aligned with it (FORGED_LOCAL_SENDER)."""
    if verdict is None:
        return []
    names = {reason.name for reason in verdict.reasons}
    sender = next((value for name, value in fields if name == "from"), "")
    domain = parseaddr(sender)[1].rpartition("@")[2].lower()
    warnings = []
    if "FORGED_LOCAL_SENDER" in names:
        warnings.append(
            f"This message claims to come from {domain or 'one of our domains'}, a domain "
            "hosted here, but it came from outside and neither SPF nor DKIM proves that it "
            "is from there. It may be forged: do not trust its links, attachments or "
            "requests.")
    warnings += [antispam.RULE_DESCRIPTIONS[name] + "." for name in _IMPERSONATION[1:]
                 if name in names]
    return warnings


# --- conversation ---------------------------------------------------------------

CONVERSATION_ROUNDS = 3
_THREAD_VALUES = ("pk", "folder__name", "flags", "blob__from_text",
                  *ordering.THREAD_FIELDS)


def conversation(mailbox: Mailbox, message: Message) -> list[tuple[dict, int]]:
    """The message's thread across the mailbox's folders, as THREAD=REFERENCES
    builds it (RFC 5256 §3): (row, depth) in reading order. Related messages
    are found by Message-ID, In-Reply-To and References, a few rounds out."""
    blob = message.blob
    wanted = {blob.message_id, blob.in_reply_to, *blob.references} - {""}
    found: dict[int, dict] = {}
    for _round in range(CONVERSATION_ROUNDS):
        if not wanted:
            break
        rows = (Message.objects.filter(folder__mailbox=mailbox)
                .filter(Q(blob__message_id__in=wanted) | Q(blob__in_reply_to__in=wanted))
                .exclude(pk__in=list(found)).values(*_THREAD_VALUES)[:200])
        known = {row["blob__message_id"] for row in found.values()}
        for row in rows:
            found[row["pk"]] = row
        ids = {row["blob__message_id"] for row in found.values()} - {""}
        wanted = ids - known
    if message.pk not in found:
        return []
    for thread in ordering.reference_threads(sorted(found.items())):
        if any(pk == message.pk for pk, _depth in thread):
            return [(found[pk], depth) for pk, depth in thread]
    return []
