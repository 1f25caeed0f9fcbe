"""mbox and Maildir as pure functions over bytes and names (apps/transfer/formats.py)."""

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.store.models import Flag
from apps.transfer import formats

WHEN = datetime(2023, 4, 5, 6, 7, 8, tzinfo=UTC)
# Bodies made of the lines that trip mbox writers and readers.
LINES = st.lists(st.sampled_from([
    b"From me", b">From me", b">>From x", b"From", b"", b"text", b"Fromage", b" From x",
]), max_size=12)
MESSAGES = LINES.map(lambda lines: b"Subject: t\r\n\r\n" + b"".join(x + b"\r\n" for x in lines))


def mbox_of(*messages: bytes) -> bytes:
    return b"".join(formats.mbox_entry(m, WHEN) for m in messages)


def read(mbox: bytes, variant: str = "mboxrd") -> list[formats.MboxMessage]:
    return list(formats.split_mbox(mbox.splitlines(keepends=True), variant=variant))


@settings(max_examples=50)
@given(st.lists(MESSAGES, min_size=1, max_size=4))
def test_mboxrd_gives_back_every_message_byte_for_byte(messages):
    entries = read(mbox_of(*messages))
    assert [e.data.replace(b"\n", b"\r\n") for e in entries] == messages
    assert {e.date for e in entries} == {WHEN}


def test_body_from_lines_are_quoted_and_do_not_split_the_message():
    mbox = mbox_of(b"Subject: a\r\n\r\nFrom here on\r\n>From there\r\n", b"Subject: b\r\n\r\nx\r\n")
    assert b"\n>From here on\n>>From there\n" in mbox
    assert [e.data for e in read(mbox)] == [b"Subject: a\n\nFrom here on\n>From there\n",
                                            b"Subject: b\n\nx\n"]


def test_mboxo_unquotes_one_level_only():
    mbox = b"From a Wed Apr  5 06:07:08 2023\nS: 1\n\n>From x\n>>From y\n\n"
    assert read(mbox, "mboxo")[0].data == b"S: 1\n\nFrom x\n>>From y\n"
    assert read(mbox, "mboxrd")[0].data == b"S: 1\n\nFrom x\n>From y\n"


def test_from_line_dates_and_text_before_the_first_message():
    mbox = (b"junk before\n\nFrom someone@example.com Sat Jan  3 01:05:34 1996\nA: 1\n\n"
            b"From x  Thu Feb 29 23:59:60 2024\nB: 2\n\nFrom - Mon Nov 30 16:47:03 2026\nC: 3\n")
    entries = read(mbox)
    assert [e.data for e in entries] == [b"A: 1\n", b"B: 2\n", b"C: 3\n"]
    assert entries[0].date == datetime(1996, 1, 3, 1, 5, 34, tzinfo=UTC)
    assert entries[1].date is None  # a leap second is no datetime: the import uses now
    assert entries[2].date == datetime(2026, 11, 30, 16, 47, 3, tzinfo=UTC)


def test_a_from_line_without_an_empty_line_before_it_is_body():
    mbox = b"From a Wed Apr  5 06:07:08 2023\nA: 1\n\nbody\nFrom b Wed Apr  5 06:07:08 2023\n"
    assert len(read(mbox)) == 1


@given(st.integers(0, 31), st.lists(st.sampled_from(["$Label1", "work", "Junk"]), unique=True))
def test_flag_fields_round_trip(bits, keywords):
    message = b"From: a@example.com\r\nSubject: s\r\n\r\nStatus: body line\r\n"
    written = formats.with_flag_fields(message, bits, keywords)
    assert formats.take_flag_fields(written) == (message, bits, keywords)


def test_flag_fields_of_mutt_and_a_header_only_message():
    data = b"Status: RO\r\nX-Status: AF\r\nX-Keywords: a, b\r\n  c\r\nSubject: x\r\n"
    assert formats.take_flag_fields(data) == (
        b"Subject: x\r\n", Flag.SEEN | Flag.ANSWERED | Flag.FLAGGED, ["a", "b"])
    assert formats.with_flag_fields(b"Subject: x", Flag.DRAFT, []) == (
        b"Subject: x\r\nStatus: O\r\nX-Status: T\r\n")


def test_imap_flag_names():
    assert formats.flag_bits(["\\Seen", "\\flagged", "\\Recent", "$Forwarded", "\\X", "$Forwarded"]
                             ) == (Flag.SEEN | Flag.FLAGGED, ["$Forwarded"])


def test_maildir_info_flags_and_keywords():
    keywords = formats.read_keywords_file("0 $Label1\n1 work\nbad line\n3 later\n")
    assert keywords == ["$Label1", "work", "", "later"]
    assert formats.maildir_info_flags("123.M1.host,S=42:2,FRSbd", keywords) == (
        Flag.FLAGGED | Flag.ANSWERED | Flag.SEEN, ["work", "later"])
    assert formats.maildir_info_flags("123.M1.host", keywords) == (0, [])
    assert formats.maildir_info(Flag.SEEN | Flag.DRAFT | Flag.DELETED, "ba") == ":2,DSTab"
    assert formats.read_keywords_file(formats.keywords_file(["x", "y"])) == ["x", "y"]


@settings(max_examples=50)
@given(st.lists(st.text(st.characters(blacklist_categories=["Cs", "Cc"],
                                      blacklist_characters="/"), min_size=1, max_size=8)
                .filter(lambda s: s not in (".", "..")), min_size=1, max_size=3))
def test_maildir_folder_names_round_trip(levels):
    name = "/".join(levels)
    directory = formats.maildir_from_folder(name)
    expected = "INBOX" if name == "INBOX" else name
    assert formats.folder_from_maildir(directory) == expected
    assert directory == "" or ("/" not in directory and directory.count(".") == len(levels))


def test_maildir_plus_plus_names():
    assert formats.maildir_from_folder("Lists/python.org") == ".Lists.python&AC4-org"
    assert formats.folder_from_maildir(".Sent") == "Sent"
    assert formats.folder_from_maildir(".Entw&APw-rfe.2023") == "Entwürfe/2023"
    assert formats.folder_from_maildir("") == "INBOX"


@given(st.binary(max_size=300), st.sampled_from(["mboxrd", "mboxo"]))
def test_any_bytes_read_as_an_mbox_without_error(data, variant):
    for entry in read(b"From x Wed Apr  5 06:07:08 2023\n" + data, variant):
        formats.take_flag_fields(entry.data)
        assert entry.date is None or entry.date.tzinfo is UTC


@given(st.binary(max_size=200), st.integers(0, 31))
def test_flag_fields_on_any_bytes(data, bits):
    kept, _bits, _keywords = formats.take_flag_fields(data)
    assert formats.take_flag_fields(formats.with_flag_fields(kept, bits, []))[1] == bits
