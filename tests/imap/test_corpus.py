"""Every tricky and malformed message of the MIME corpus is APPENDed and served:
BODY[] is byte for byte what was appended (but for parts holding NUL, which come
back base64-encoded: RFC 3516 §6, tested in test_conformance.py), ENVELOPE and
BODYSTRUCTURE parse, and the size of every part in BODYSTRUCTURE is the size of
the BODY[part] served."""

from __future__ import annotations

import itertools

from imapclient import IMAPClient

from tests.conftest import CORPORA
from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP

MAX_PARTS_CHECKED = 40  # per message; the torture tests have thousands


def children_of(structure):  # type: ignore[no-untyped-def]
    """The parts of a multipart, None for a leaf. IMAPClient turns the top level
    into a list of parts; nested levels stay raw tuples that start with the parts."""
    if isinstance(structure[0], list):
        return structure[0]
    if isinstance(structure[0], tuple):
        return list(itertools.takewhile(lambda item: isinstance(item, tuple), structure))
    return None


def leaves(structure, prefix=()):  # type: ignore[no-untyped-def]
    """(section, size) of each part with a size, from a parsed BODYSTRUCTURE."""
    children = children_of(structure)
    if children is not None:
        for index, child in enumerate(children, 1):
            yield from leaves(child, (*prefix, index))
        return
    section = prefix or (1,)
    yield section, structure[6]
    if structure[0].upper() == b"MESSAGE" and structure[1].upper() in (b"RFC822", b"GLOBAL"):
        inner = structure[8]
        if children_of(inner) is not None:
            yield from leaves(inner, section)
        else:
            yield (*section, 1), inner[6]


def test_every_corpus_message_is_served(imap_port, mailbox, settings):
    settings.MAILHOST_IMAP_MAX_LITERAL = 10 * 1024 * 1024
    files = sorted(p for p in (CORPORA / "mime").iterdir() if p.suffix != ".json")
    assert len(files) > 250
    raw = RawIMAP(imap_port)
    raw.login(mailbox.address, PASSWORD)
    originals = []
    for path in files:
        data = path.read_bytes()
        # A NUL byte needs a literal8 (RFC 3516 §4.2).
        marker = b"~{%d+}" if b"\0" in data else b"{%d+}"
        line = raw.command(b"APPEND INBOX " + marker % len(data) + b"\r\n" + data)[-1]
        assert b" OK [APPENDUID " in line, (path.name, line)
        originals.append((path.name, data))
    with IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=60) as client:
        client.login(mailbox.address, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        uids = client.search()
        assert len(uids) == len(originals)
        for start in range(0, len(uids), 50):
            batch = uids[start:start + 50]
            data = client.fetch(batch, ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]",
                                        "RFC822.SIZE"])
            for uid in batch:
                name, original = originals[uid - 1]
                entry = data[uid]
                if b"\0" in original:
                    assert b"\0" not in entry[b"BODY[]"], name
                else:
                    assert entry[b"BODY[]"] == original, name
                assert entry[b"RFC822.SIZE"] == len(entry[b"BODY[]"]), name
                assert entry[b"ENVELOPE"] is not None, name
                parts = list(leaves(entry[b"BODYSTRUCTURE"]))[:MAX_PARTS_CHECKED]
                sections = [".".join(map(str, s)) for s, _ in parts]
                served = client.fetch([uid], [f"BODY.PEEK[{s}]" for s in sections])[uid]
                for (_section, size), text in zip(parts, sections, strict=True):
                    body = served[f"BODY[{text}]".encode()]
                    assert len(body or b"") == size, (name, text)
