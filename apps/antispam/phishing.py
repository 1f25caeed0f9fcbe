"""Phishing and spoofing rules: each a named test with its own points, added
to the verdict beside the sender-authentication tests (apps/antispam/services.py).

``message_facts`` reads what the rules look at from the message bytes (pure);
``rule_hits`` judges those facts against the hosted domains (pure);
``check`` adds the database: the hosted domains and users, and the table of
link domains this server has seen before.

Lookalike domains are found by TR39 confusable skeletons (Unicode TR39 §4),
built from the confusables data that the pinned ``confusable_homoglyphs``
package ships: "examp1e.org" and "exаmple.org" (Cyrillic a) both have the
skeleton of "example.org".
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from html.parser import HTMLParser
from importlib import resources
from io import BytesIO

from django.conf import settings
from django.db.models import Value
from django.db.models.functions import Lower
from django.utils import timezone

from apps.antispam.auth import organizational_domain
from apps.antispam.models import FirstSeenDomain
from apps.directory.models import Domain, User
from apps.store import mime
from mailhost.compiled import CompiledQuery

# Points per rule, added to the score like the authentication tests' (the
# mailbox's threshold, 9 by default, decides Junk). A lookalike of our own
# domain or an executable attachment has no innocent reading; a link domain
# never seen before is only a hint.
RULE_POINTS = {
    "FROM_LOOKALIKE_DOMAIN": 6.0,
    "FROM_NAME_IMITATES_DOMAIN": 3.5,
    "FROM_NAME_IMITATES_USER": 2.0,
    "REPLY_TO_OUTSIDE": 3.0,
    "LINK_TEXT_MISMATCH": 4.0,
    "LINK_TO_IP": 2.5,
    "LINK_FRESH_DOMAIN": 1.5,
    "ATTACH_EXECUTABLE": 5.0,
    "ATTACH_MACRO": 3.0,
    "ATTACH_DOUBLE_EXTENSION": 4.0,
    "ATTACH_ENCRYPTED_ARCHIVE": 4.0,
}

# What each rule means, for the webmail's "why is this in Junk".
DESCRIPTIONS = {
    "FROM_LOOKALIKE_DOMAIN": "The sender's domain looks like one of ours but is not",
    "FROM_NAME_IMITATES_DOMAIN": "The sender's name shows one of our domains or addresses, "
                                 "but the mail comes from outside",
    "FROM_NAME_IMITATES_USER": "The sender's name is one of our users', "
                               "but the mail comes from outside",
    "REPLY_TO_OUTSIDE": "It claims to be from one of our domains, but replies go elsewhere",
    "LINK_TEXT_MISMATCH": "A link shows one address and leads to another",
    "LINK_TO_IP": "A link leads to a bare IP address",
    "LINK_FRESH_DOMAIN": "A link leads to a domain first seen here in the last few days",
    "ATTACH_EXECUTABLE": "It carries a program or script",
    "ATTACH_MACRO": "It carries an office document with macros",
    "ATTACH_DOUBLE_EXTENSION": "An attachment's name hides its type behind a second extension",
    "ATTACH_ENCRYPTED_ARCHIVE": "It carries a password-protected archive, "
                                "which no filter can look into",
}

# Windows runs these on a double click (Microsoft's list of unsafe file types,
# as mail gateways block them).
EXECUTABLE_EXTENSIONS = frozenset({
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "msi", "msp", "msc", "jar", "js", "jse",
    "vbs", "vbe", "wsf", "wsh", "wsc", "hta", "lnk", "ps1", "psm1", "reg", "inf", "scf",
    "application", "gadget", "appx", "appxbundle", "msix", "iso", "img", "vhd", "vhdx",
    "dll", "sys", "chm", "url",
})
MACRO_EXTENSIONS = frozenset({"docm", "dotm", "xlsm", "xltm", "xlam", "xlsb", "pptm",
                              "potm", "ppam", "ppsm", "sldm"})
EXECUTABLE_TYPES = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-dosexec",
    "application/x-executable", "application/vnd.microsoft.portable-executable",
    "application/x-ms-shortcut", "application/hta", "application/x-javascript",
    "application/javascript", "text/javascript", "application/x-vbscript",
})
# What a victim expects to open: a name ending in one of these and then
# something else ("invoice.pdf.exe") hides its real type.
DOCUMENT_EXTENSIONS = frozenset({"pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt",
                                 "ods", "rtf", "txt", "csv", "jpg", "jpeg", "png", "gif",
                                 "bmp", "tif", "tiff", "mp3", "mp4", "wav", "htm", "html"})
ARCHIVE_EXTENSIONS = frozenset({"zip", "rar", "7z", "gz", "tgz", "cab", "ace", "arj"})
# An OLE2 (.doc, .xls) file with a VBA project names it in UTF-16.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_VBA = "_VBA_PROJECT".encode("utf-16-le")

MAX_LINKS = 200
MAX_ZIP_BYTES = 20_000_000
_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'()]+", re.IGNORECASE)
# Visible link text that names a host: a URL, or a dotted name with a TLD.
_HOST_IN_TEXT = re.compile(
    r"^\s*(?:(?:https?|ftp)://)?(?:[^\s/@]+@)?((?:[\w-]+\.)+[^\W\d_]{2,})\.?(?:[:/?#]\S*)?\s*$",
    re.IGNORECASE)
_DOMAIN_IN_TEXT = re.compile(r"(?:[\w-]+\.)+[^\W\d_]{2,}", re.IGNORECASE)


# --- TR39 skeletons ---------------------------------------------------------------


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype. The package's data lists, for
    every character of a confusables.txt line, the other side of that line;
    a character listed with exactly one counterpart that lists it back is a
    pair with no direction in the data: the lower code point is taken as the
    prototype, which keeps the equivalence (all that a comparison needs)."""
    data = json.loads(resources.files("confusable_homoglyphs")
                      .joinpath("confusables.json").read_text(encoding="utf-8"))
    linked = {char: [entry["c"].strip("\u200e") for entry in entries]
              for char, entries in data.items()}
    mapping: dict[str, str] = {}
    for char, others in linked.items():
        if len(char) != 1 or len(others) != 1:
            continue  # a prototype of several (or a multi-character target)
        (target,) = others
        if linked.get(target) == [char] and len(target) == 1 and target > char:
            continue  # a pair: the lower one is the prototype
        mapping[char] = target
    return mapping


@lru_cache(maxsize=4096)
def skeleton(text: str) -> str:
    """TR39 §4 skeleton(X): NFD, each character to its prototype, NFD again;
    then case-folded and mapped once more, since the prototypes of "0" and
    "I" are capitals ("O", "l") while host names are compared in lower case."""
    prototypes = _prototypes()

    def mapped(value: str) -> str:
        value = unicodedata.normalize("NFD", value)
        return unicodedata.normalize("NFD", "".join(prototypes.get(c, c) for c in value))

    return mapped(mapped(text).casefold())


def unicode_host(host: str) -> str:
    """A host name as a reader sees it: IDNA labels (xn--) decoded, lower case."""
    host = host.strip().strip(".").lower()
    try:
        return host.encode("ascii").decode("idna") if "xn--" in host else host
    except (UnicodeError, ValueError):
        return host


# --- facts from the message (pure) --------------------------------------------------


@dataclass(frozen=True)
class Link:
    host: str  # of the target, lower case, IDNA decoded
    text: str  # what the reader sees (HTML) or "" (a plain-text URL)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class MessageFacts:
    from_name: str = ""
    from_address: str = ""
    reply_to: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def from_domain(self) -> str:
        return unicode_host(self.from_address.rpartition("@")[2])


_URL_AUTHORITY = re.compile(r"\s*(?:https?|ftp)://([^/?#\\\s]*)", re.IGNORECASE)


def host_of(url: str) -> str:
    """The host of an absolute http(s)/ftp URL, or "" for anything else."""
    match = _URL_AUTHORITY.match(url)
    if not match:
        return ""
    authority = match.group(1).rpartition("@")[2]
    if authority.startswith("["):
        return authority[1:].partition("]")[0].lower()
    return unicode_host(authority.partition(":")[0])


class _LinkParser(HTMLParser):
    """The anchors of an HTML body with the text they show."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[Link] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close()
            self._href = next((v for k, v in attrs if k == "href" and v), "")
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close()

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def _close(self) -> None:
        if self._href is not None and len(self.links) < MAX_LINKS:
            host = host_of(self._href)
            if host:
                self.links.append(Link(host, " ".join("".join(self._text).split())))
        self._href = None

    def close(self) -> None:
        super().close()
        self._close()


def html_links(text: str) -> list[Link]:
    parser = _LinkParser()
    parser.feed(text)
    parser.close()
    return parser.links


def text_links(text: str) -> list[Link]:
    return [Link(host, "") for url in _URL.findall(text)[:MAX_LINKS] if (host := host_of(url))]


def _addresses(envelope_list: list | None) -> list[tuple[str, str]]:
    """(display name, address) of an IMAP ENVELOPE address list (RFC 3501
    §7.4.2: name, route, mailbox, host), encoded words decoded."""
    return [(mime.decode_words(name or ""), f"{mailbox}@{host}".lower())
            for name, _route, mailbox, host in envelope_list or () if mailbox and host]


def message_facts(data: bytes, info: mime.MessageInfo | None = None) -> MessageFacts:
    """What the rules look at: the From name and address, Reply-To, links
    (with their visible text in HTML) and attachments; ``info`` is
    ``mime.analyze(data)`` if the caller has it. Never raises."""
    info = info or mime.analyze(data)
    structure = info.bodystructure
    facts = MessageFacts()
    senders = _addresses(info.envelope[2])
    if senders:
        facts.from_name, facts.from_address = senders[0]
    facts.reply_to = [address for _, address in _addresses(info.envelope[4])]
    for _section, part in mime.leaf_parts(structure):
        if mime.is_attachment(part):
            facts.attachments.append(Attachment(
                mime.part_filename(part).strip().lower(),
                f"{part['type']}/{part['subtype']}".lower(), mime.part_bytes(data, part)))
        elif part["type"] == "text" and part["subtype"] in ("html", "plain"):
            text = mime.decode_text(mime.part_bytes(data, part), part)
            found = html_links(text) if part["subtype"] == "html" else text_links(text)
            facts.links.extend(found[:MAX_LINKS - len(facts.links)])
    return facts


# --- the rules (pure) -------------------------------------------------------------


# Hosts that browsers read as IPv4 addresses: dotted, hex or single numbers.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}")


# All an IPv4 address is made of, in any of those spellings (lower case, as
# link hosts are); an IPv6 address has a colon.
_NUMERIC_HOST_CHARACTERS = frozenset("0123456789abcdefx.")


def is_ip_host(host: str) -> bool:
    """A dotted or bracketed address, or the integer and hex spellings that
    browsers also accept (http://3232235777/)."""
    if ":" not in host and not _NUMERIC_HOST_CHARACTERS.issuperset(host):
        return False  # a name: spares ipaddress its two exceptions per link
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_NUMERIC_HOST.fullmatch(host))


def lookalike_of(domain: str, hosted: Iterable[str]) -> str | None:
    """The hosted domain that ``domain`` imitates (same skeleton, or its
    registrable part's skeleton, and not the same name), or None."""
    domain = unicode_host(domain)
    if not domain:
        return None
    index = _skeleton_index(frozenset(hosted))
    for candidate in (skeleton(domain), skeleton(unicode_host(_org(domain)))):
        for name in index.get(candidate, ()):
            own = unicode_host(name)
            if own != domain and not domain.endswith("." + own):
                return name
    return None


@lru_cache(maxsize=4)
def _skeleton_index(hosted: frozenset[str]) -> dict[str, list[str]]:
    """Hosted domains by skeleton, worked out once per set of domains: a
    platform's thousands are not skeletonised again for every message."""
    index: dict[str, list[str]] = {}
    for name in sorted(hosted):
        index.setdefault(skeleton(unicode_host(name)), []).append(name)
    return index


def _org(domain: str) -> str:
    try:
        return organizational_domain(domain.encode("idna").decode("ascii"))
    except UnicodeError:
        return domain


def _same_site(host: str, other: str) -> bool:
    return host == other or _org(host) == _org(other)


def _extensions(filename: str) -> list[str]:
    name = filename.strip().strip(".").rpartition("/")[2]
    return [part.strip() for part in name.split(".")[1:]]


@dataclass(frozen=True)
class ArchiveFacts:
    encrypted: bool
    names: list[str]


def zip_facts(data: bytes) -> ArchiveFacts | None:
    """The central directory of a zip: whether any entry is encrypted (general
    purpose flag bit 0, APPNOTE 4.4.4) and the entries' names; nothing is
    extracted. None when ``data`` is no readable zip."""
    if len(data) > MAX_ZIP_BYTES or not data.startswith(b"PK"):
        return None
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            NotImplementedError, OverflowError, KeyError, IndexError, UnicodeError):
        return None
    return ArchiveFacts(any(entry.flag_bits & 0x1 for entry in entries),
                        [entry.filename.lower() for entry in entries[:1000]])


def attachment_hits(attachment: Attachment) -> set[str]:
    hits: set[str] = set()
    extensions = _extensions(attachment.filename)
    last = extensions[-1] if extensions else ""
    if last in EXECUTABLE_EXTENSIONS or attachment.content_type in EXECUTABLE_TYPES \
            or attachment.data.startswith(b"MZ"):
        hits.add("ATTACH_EXECUTABLE")
    if last in MACRO_EXTENSIONS or (attachment.data.startswith(_OLE_MAGIC)
                                    and _OLE_VBA in attachment.data):
        hits.add("ATTACH_MACRO")
    if len(extensions) >= 2 and extensions[-2] in DOCUMENT_EXTENSIONS and (
            last in EXECUTABLE_EXTENSIONS | MACRO_EXTENSIONS | ARCHIVE_EXTENSIONS):
        hits.add("ATTACH_DOUBLE_EXTENSION")
    archive = zip_facts(attachment.data)
    if archive is not None:
        if archive.encrypted:
            hits.add("ATTACH_ENCRYPTED_ARCHIVE")
        for name in archive.names:
            if name.endswith("vbaproject.bin"):
                hits.add("ATTACH_MACRO")  # an OOXML document with a VBA project
            # What the archive holds, by name (readable even when encrypted).
            hits |= attachment_hits(Attachment(name, "", b""))
    return hits


@dataclass(frozen=True)
class Hosted:
    """What the rules know of the hosted side."""

    domains: frozenset[str]
    # Whether the From display name is a hosted user's name.
    name_is_users: bool = False


def rule_hits(facts: MessageFacts, hosted: Hosted, *, authenticated: bool,
              from_verified: bool, fresh_domains: Iterable[str] = ()) -> list[str]:
    """The rules' names that ``facts`` trip, in RULE_POINTS order. Identity
    rules skip mail our own users submitted (``authenticated``); a lookalike
    or an imitating name counts however well its own domain signs (anyone can
    sign for examp1e.org), a Reply-To elsewhere only when the From domain
    (ours) is not proven (``from_verified``: SPF or DKIM aligned)."""
    hits: set[str] = set()
    domains = {unicode_host(d) for d in hosted.domains}
    from_domain = facts.from_domain
    from_hosted = from_domain in domains
    if not authenticated and from_domain and not from_hosted:
        if lookalike_of(from_domain, domains):
            hits.add("FROM_LOOKALIKE_DOMAIN")
        if _name_imitates(facts.from_name, domains):
            hits.add("FROM_NAME_IMITATES_DOMAIN")
        if hosted.name_is_users:
            hits.add("FROM_NAME_IMITATES_USER")
    # RFC 5322 §3.6.2: replies go to Reply-To; a claim to be us that sends
    # the answers elsewhere wants the answers.
    if not authenticated and from_hosted and not from_verified and any(
            (host := unicode_host(a.rpartition("@")[2])) not in domains
            and not _same_site(host, from_domain) for a in facts.reply_to):
        hits.add("REPLY_TO_OUTSIDE")
    for link in facts.links:
        to_ip = is_ip_host(link.host)
        if to_ip:
            hits.add("LINK_TO_IP")
        shown = _HOST_IN_TEXT.match(link.text)
        # A name shown over a bare IP address is as much another place as
        # another domain is (the text pattern never matches an address).
        if shown and (to_ip or not _same_site(unicode_host(shown.group(1)), link.host)):
            hits.add("LINK_TEXT_MISMATCH")
    if set(fresh_domains):
        hits.add("LINK_FRESH_DOMAIN")
    for attachment in facts.attachments:
        hits |= attachment_hits(attachment)
    return [name for name in RULE_POINTS if name in hits]


def _name_imitates(name: str, domains: set[str]) -> bool:
    """A display name that shows a hosted domain (or a lookalike of one),
    alone or in an address: "it@example.org" <x@elsewhere>."""
    for found in _DOMAIN_IN_TEXT.findall(name):
        host = unicode_host(found)
        if host in domains or lookalike_of(host, domains):
            return True
    return False


def link_domains(facts: MessageFacts, hosted: Iterable[str]) -> set[str]:
    """The registrable domains the links lead to, ours and IP hosts left out."""
    own = {_org(unicode_host(d)) for d in hosted}
    return {org for link in facts.links if not is_ip_host(link.host)
            and (org := _org(link.host)) not in own}


# --- with the database --------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """What the rules read from the database that is the same for every
    message: ``site_facts`` reads it once for a batch of messages."""

    hosted_domains: frozenset[str]
    # Whether the first-seen table is old enough to tell a fresh domain:
    # on a new server every domain would be.
    tracks_fresh_domains: bool


def site_facts() -> Site:
    days = settings.MAILHOST_PHISHING_FRESH_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    return Site(frozenset(Domain.objects.values_list("name", flat=True)),
                days > 0 and FirstSeenDomain.objects.filter(first_seen__lt=cutoff).exists())


# The two reads of the checks, their SQL built once (mailhost/compiled.py).
_FIRST_SEEN = CompiledQuery(lambda names: FirstSeenDomain.objects.filter(name__in=names)
                            .values_list("name", "first_seen"), [str])
# Case-insensitive as display_name__iexact, whose SQLite form (LIKE) would take
# a compiled-in name's % and _ as wildcards: both sides lowered by the database.
_USER_NAMED = CompiledQuery(
    lambda name: User.objects.alias(lowered=Lower("display_name"))
    .filter(lowered=Lower(Value(name)), mailbox__isnull=False).values_list("pk")[:1], str)
# The same for many names at once: whether any of them is a user's.
_ANY_USER_NAMED = CompiledQuery(
    lambda names: User.objects.alias(lowered=Lower("display_name"))
    .filter(lowered__in=[Lower(Value(name)) for name in names], mailbox__isnull=False)
    .values_list("pk")[:1], [str])
# Names (or domains) per query: within SQLite's bound on parameters.
_PER_QUERY = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _PER_QUERY):
        yield items[start:start + _PER_QUERY]


def fresh_link_domains(domains: set[str], *, site: Site) -> set[str]:
    """Of ``domains``, those first seen within MAILHOST_PHISHING_FRESH_DAYS;
    records the new ones. Nothing is fresh until the table itself is that old
    (``site.tracks_fresh_domains``)."""
    if not domains:
        return set()
    cutoff = timezone.now() - timedelta(days=settings.MAILHOST_PHISHING_FRESH_DAYS)
    names = sorted(domains)
    known = {name: seen for chunk in _chunks(names) for name, seen in _FIRST_SEEN.rows(chunk)}
    new = [name for name in names if name not in known]
    if new:
        FirstSeenDomain.objects.bulk_create(
            [FirstSeenDomain(name=name) for name in new], ignore_conflicts=True)
    if not site.tracks_fresh_domains:
        return set()
    return {name for name in names if name in new or known[name] >= cutoff}


def users_named(names: set[str]) -> set[str]:
    """Those of ``names`` that are a hosted user's display name, in any case.
    One query for all, the usual answer being none; then one per name."""
    ordered = sorted(names)
    if not any(_ANY_USER_NAMED.first(chunk) for chunk in _chunks(ordered)):
        return set()
    return {name for name in ordered if _USER_NAMED.first(name)}


@dataclass(frozen=True)
class Examined:
    """One message's facts for the rules, and what ``look_up`` reads for it
    from the database together with the other messages of a batch."""

    facts: MessageFacts
    user_name: str  # the From display name to look for among the users', or ""
    link_domains: frozenset[str]  # for the first-seen table


@dataclass(frozen=True)
class Lookups:
    """The database's answers for a batch of examined messages."""

    users_names: set[str]
    fresh_domains: set[str]


def examine(data: bytes, *, authenticated: bool, site: Site,
            info: mime.MessageInfo | None = None) -> Examined:
    """The pure part of the checks of one inbound message; ``site`` from
    ``site_facts``, ``info`` as for ``message_facts``."""
    facts = message_facts(data, info)
    name = " ".join(facts.from_name.split())
    domains = sorted(domain[:253] for domain in link_domains(facts, site.hosted_domains))
    return Examined(facts, "" if authenticated else name, frozenset(domains[:MAX_LINKS]))


def look_up(examined: Sequence[Examined], *, site: Site) -> Lookups:
    """Two reads for a batch of messages, not two for each."""
    return Lookups(users_named({e.user_name for e in examined if e.user_name}),
                   fresh_link_domains({d for e in examined for d in e.link_domains}, site=site))


def check(examined: Examined, lookups: Lookups, *, authenticated: bool, from_verified: bool,
          site: Site) -> list[str]:
    """The phishing rules' names for one examined message."""
    return rule_hits(examined.facts,
                     Hosted(site.hosted_domains, examined.user_name in lookups.users_names),
                     authenticated=authenticated, from_verified=from_verified,
                     fresh_domains=examined.link_domains & lookups.fresh_domains)
