"""The full-text index: kept with the blobs, answering what the slow scan did."""

import base64
import contextlib
import quopri
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.imap.parser import SearchKey
from apps.imap.search import search_folder
from apps.store import mime, textindex
from apps.store import services as store
from apps.store.models import Blob, BlobText, Message
from tests.factories import forget_text_index, make_mailbox

pytestmark = pytest.mark.django_db

PLAIN = (b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>\r\n"
         b"To: Bob <bob@example.org>\r\nCc: carol@example.org\r\n"
         b"Subject: =?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n"
         b"X-Ticket: ABC-1234 STRASSE\r\nMessage-ID: <p1@example.org>\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
         b"\r\n" + "Die Straße ist lang, ǅemal İstanbul. *Wild?card[s]* 100%_done\r\n".encode())
QUOTED = (b"From: Ann <ann@example.net>\r\nTo: bob@example.org\r\nSubject: Quarterly report\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
          b"--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
          + quopri.encodestring("Ergebnisse für das Café: très bien\r\n".encode("latin-1"))
          + b"\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\n"
          + base64.encodebytes("<p>Ünïcödé <b>zebrafish</b> lives here</p>".encode())
          + b"\r\n--b1--\r\n")
SHORT = b"From: x@y.example\r\nSubject: ok\r\n\r\nno\r\n"
MESSAGES = [PLAIN, QUOTED, SHORT]


def key(op: str, *args: str) -> SearchKey:
    return SearchKey(op, args)


@contextlib.contextmanager
def index_unused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The search as it was before the index: every message read and compared."""
    def nothing_known(folder_id, columns, needle):  # type: ignore[no-untyped-def]
        uids = set(Message.objects.filter(folder_id=folder_id).values_list("uid", flat=True))
        return textindex.Lookup(set(), uids)

    with monkeypatch.context() as patch:
        patch.setattr(textindex, "lookup", nothing_known)
        yield


@pytest.fixture
def inbox():  # type: ignore[no-untyped-def]
    mailbox = make_mailbox()
    for data in MESSAGES:
        store.deliver([mailbox], data)
    return store.get_folder(mailbox, "INBOX")


def test_delivery_writes_the_index_row_case_folded(inbox):
    text = BlobText.objects.get(blob__message_id="<p1@example.org>")
    assert text.subject == "grüsse aus köln" and text.from_text.startswith("jürgen müller")
    assert "abc-1234 strasse" in text.headers and "die strasse ist lang" in text.body
    assert text.complete
    assert BlobText.objects.count() == Blob.objects.count() == len(MESSAGES)


def test_searches_find_decoded_words_in_any_case(inbox):
    assert search_folder(inbox.pk, key("SUBJECT", "GRÜSSE")) == [1]
    assert search_folder(inbox.pk, key("FROM", "müller")) == [1]
    assert search_folder(inbox.pk, key("BODY", "café: TRÈS")) == [2]
    assert search_folder(inbox.pk, key("BODY", "ZEBRAFISH")) == [2]
    assert search_folder(inbox.pk, key("TEXT", "quarterly")) == [2]
    assert search_folder(inbox.pk, key("HEADER", "x-ticket", "abc-12")) == [1]
    assert search_folder(inbox.pk, key("HEADER", "subject", "report")) == [2]
    # Strings that look like wildcards to LIKE or GLOB are plain characters.
    assert search_folder(inbox.pk, key("BODY", "*wild?card[s]*")) == [1]
    assert search_folder(inbox.pk, key("BODY", "100%_d")) == [1]
    assert search_folder(inbox.pk, key("BODY", "wild*s")) == []
    # Under three characters, and the empty string that every message holds.
    assert search_folder(inbox.pk, key("SUBJECT", "OK")) == [3]
    assert search_folder(inbox.pk, key("BODY", "ǆE")) == [1]
    assert search_folder(inbox.pk, key("SUBJECT", "k")) == [1, 3]
    assert search_folder(inbox.pk, key("SUBJECT", "")) == [1, 2, 3]


LATIN1 = (b"Subject: latin\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          b"Content-Transfer-Encoding: 8bit\r\n\r\n"
          + "Grüße aus dem Café, Zürich\r\nsecond line\r\n".encode("latin-1"))
# UTF-8 under a Latin-1 label: the decoded text reads "CafÃ©".
MISLABELLED = (b"Subject: mislabelled\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
               b"\r\n" + "Treffen im Café Zürich\r\n".encode())


def test_a_plain_body_is_indexed_once_and_a_mislabelled_one_as_sent_too(inbox):
    for data in (LATIN1, MISLABELLED):
        store.deliver([inbox.mailbox], data)
    # The raw body would repeat the decoded text of these two: indexed once.
    assert BlobText.objects.get(blob__message_id="<p1@example.org>").body.count(
        "die strasse ist lang") == 1
    assert BlobText.objects.get(blob__subject="latin").body.count("zürich") == 1
    assert search_folder(inbox.pk, key("BODY", "café, zürich")) == [4]
    assert search_folder(inbox.pk, key("BODY", "line")) == [4]
    # The UTF-8 reading of the mislabelled body is what finds its words.
    assert search_folder(inbox.pk, key("BODY", "café zürich")) == [5]
    assert search_folder(inbox.pk, key("BODY", "cafã©")) == [5]
    for needle in ("café", "zürich", "ße", "im caf"):
        search = key("BODY", needle)
        with pytest.MonkeyPatch.context() as patch, index_unused(patch):
            scanned = search_folder(inbox.pk, search)
        assert search_folder(inbox.pk, search) == scanned


def test_append_indexes_and_copy_shares_the_blobs_row(inbox):
    mailbox = inbox.mailbox
    archive = store.get_folder(mailbox, "Archive")
    store.append(mailbox, "Archive", b"Subject: appended\r\n\r\nkiwifruit\r\n")
    assert search_folder(archive.pk, key("BODY", "kiwifruit")) == [1]
    store.copy(inbox, [1, 2], archive)
    assert search_folder(archive.pk, key("BODY", "zebrafish")) == [3]
    assert BlobText.objects.count() == Blob.objects.count() == len(MESSAGES) + 1


def test_garbage_collection_removes_index_rows(inbox):
    store.remove(inbox, [2])
    assert store.collect_garbage(0) == 1
    assert BlobText.objects.count() == Blob.objects.count() == len(MESSAGES) - 1
    # The database's own index forgot it too: the same text delivered again is found once.
    store.deliver([inbox.mailbox], QUOTED)
    assert search_folder(inbox.pk, key("BODY", "zebrafish")) == [4]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO store_blobtext_fts(store_blobtext_fts) "
                           "VALUES ('integrity-check')")


def test_unindexed_blobs_are_found_and_reindex_fills_the_index(inbox):
    forget_text_index()
    assert search_folder(inbox.pk, key("BODY", "zebrafish")) == [2]
    assert search_folder(inbox.pk, key("SUBJECT", "grüsse")) == [1]
    call_command("reindex", "--batch", "2", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert BlobText.objects.count() == len(MESSAGES)
    assert not Blob.objects.filter(text_indexed=False).exists()
    assert search_folder(inbox.pk, key("BODY", "zebrafish")) == [2]
    call_command("reindex", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert BlobText.objects.count() == len(MESSAGES)


def test_reindex_restores_lost_index_rows(inbox):
    BlobText.objects.filter(blob__subject="Quarterly report").delete()  # lost
    call_command("reindex", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert BlobText.objects.count() == len(MESSAGES)
    assert search_folder(inbox.pk, key("BODY", "zebrafish")) == [2]


def test_a_partly_indexed_body_is_read(inbox, monkeypatch):
    monkeypatch.setattr(textindex, "MAX_BODY_CHARS", 40)
    store.deliver([inbox.mailbox], b"Subject: long\r\n\r\n" + b"filler " * 20 + b"needlework\r\n")
    assert not BlobText.objects.get(blob__subject="long").complete
    assert search_folder(inbox.pk, key("BODY", "needlework")) == [4]
    assert search_folder(inbox.pk, key("SUBJECT", "long")) == [4]


def queries_of_a_search(folder_id: int) -> int:
    query = SearchKey("AND", (key("BODY", "zebrafish"), key("FROM", "ann"),
                              SearchKey("NOT", (key("TEXT", "x"),)),
                              key("HEADER", "x-ticket", "abc")))
    with CaptureQueriesContext(connection) as queries:
        search_folder(folder_id, query)
    return len(queries)


def test_a_search_makes_as_many_queries_whatever_the_folder_size(inbox):
    small = queries_of_a_search(inbox.pk)
    store.deliver_batch([store.DeliveryRequest([inbox.mailbox_id], data + b"%d" % n)
                         for n in range(30) for data in MESSAGES])
    assert queries_of_a_search(inbox.pk) == small


FIELDS = [("FROM",), ("TO",), ("CC",), ("SUBJECT",), ("BODY",), ("TEXT",),
          ("HEADER", "x-ticket"), ("HEADER", "subject"), ("HEADER", "content-type")]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.sampled_from(MESSAGES), start=st.integers(0, 2000),
       length=st.integers(1, 12), field=st.sampled_from(FIELDS),
       case=st.sampled_from([str, str.upper, str.lower, str.swapcase]))
def test_the_index_finds_exactly_what_the_scan_found(inbox, monkeypatch, message, start,
                                                     length, field, case):
    source = message.decode("utf-8", "replace") + textindex.body_text(
        message, mime.analyze(message).bodystructure)
    start %= len(source)
    needle = case(source[start:start + length])
    search = key(*field, needle)
    with index_unused(monkeypatch):
        scanned = search_folder(inbox.pk, search)
    assert search_folder(inbox.pk, search) == scanned
