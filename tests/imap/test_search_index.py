"""SEARCH over a real listener, answered from the full-text index: what an
imaplib client finds, non-ASCII and short strings included."""

from __future__ import annotations

import base64
import quopri

import pytest
from django.db.backends.utils import CursorWrapper

from apps.store import services as store
from apps.store.models import BlobText
from tests.factories import forget_text_index

ENCODED = (b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>\r\n"
           b"To: Bob <bob@example.org>\r\n"
           b"Subject: =?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=\r\nX-Ticket: ABC-1234\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + "Die Straße ist lang. Smörgåsbord für alle.\r\n".encode())
PARTS = (b"From: Ann <ann@example.net>\r\nTo: bob@example.org\r\nSubject: Quarterly figures\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
         b"--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         + quopri.encodestring("Résumé des chiffres\r\n".encode("latin-1"))
         + b"\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n"
         + base64.encodebytes("<p>Ålesund <b>zebrafish</b> report</p>".encode())
         + b"\r\n--b1--\r\n")
TINY = b"From: x@y.example\r\nTo: bob@example.org\r\nSubject: ok\r\n\r\nyes\r\n"


@pytest.fixture
def client(connect, mailbox):  # type: ignore[no-untyped-def]
    for data in (ENCODED, PARTS, TINY):
        store.deliver([mailbox], data)
    assert BlobText.objects.count() == 3
    imap = connect()
    imap.select("INBOX")
    return imap


def search(imap, *criteria: str, utf8: str | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    """Message numbers found; ``utf8`` goes last as a literal with CHARSET UTF-8."""
    if utf8 is not None:
        imap.literal = utf8.encode()
        status, data = imap.search("UTF-8", *criteria)
    else:
        status, data = imap.search(None, *criteria)
    assert status == "OK", data
    return [int(n) for n in data[0].split()]


def test_string_keys_find_decoded_text_case_insensitively(client):
    assert search(client, "FROM", utf8="MÜLLER") == [1]
    assert search(client, "FROM", "ANN@EXAMPLE") == [2]
    assert search(client, "SUBJECT", utf8="grüsse aus") == [1]
    assert search(client, "SUBJECT", utf8="GRÜßE") == [1]
    assert search(client, "SUBJECT", "QUARTERLY") == [2]
    assert search(client, "HEADER", "X-Ticket", "abc-12") == [1]
    assert search(client, "HEADER", "Subject", "figures") == [2]
    assert search(client, "HEADER", "X-Ticket", '""') == [1]
    assert search(client, "BODY", utf8="STRASSE") == [1]
    assert search(client, "BODY", utf8="résumé") == [2]  # quoted-printable Latin-1
    assert search(client, "BODY", "ZEBRAFISH") == [2]  # base64 HTML, tags stripped
    assert search(client, "BODY", utf8="ålesund") == [2]
    assert search(client, "TEXT", "zebrafish") == [2] and search(client, "TEXT", "jm@") == [1]
    assert search(client, "TEXT", "nothing-like-this") == []
    assert search(client, "NOT", "BODY", "zebrafish") == [1, 3]
    assert search(client, "OR", "SUBJECT", "ok", "BODY", "zebrafish") == [2, 3]


def test_short_strings_are_found_too(client):
    assert search(client, "SUBJECT", "OK") == [3]
    assert search(client, "BODY", "ye") == [3]
    assert search(client, "FROM", "x@") == [3]
    assert search(client, "TEXT", utf8="ö") == [1]
    assert search(client, "BODY", '""') == [1, 2, 3]


def test_unindexed_messages_are_still_found(client):
    forget_text_index()
    assert search(client, "BODY", "zebrafish") == [2]
    assert search(client, "SUBJECT", utf8="grüße") == [1]


def test_search_body_makes_as_many_queries_whatever_the_folder_size(client, mailbox,
                                                                    monkeypatch):
    statements: list[str] = []
    original = CursorWrapper.execute

    def counting(self, sql, params=None):  # type: ignore[no-untyped-def]
        statements.append(sql)  # list.append is atomic: the session runs in threads
        return original(self, sql, params)

    def queries(criteria: str) -> int:
        client.noop()  # the view is up to date before counting
        statements.clear()
        with monkeypatch.context() as patch:
            patch.setattr(CursorWrapper, "execute", counting)
            status, _data = client.search(None, criteria)
        assert status == "OK"
        return len(statements)

    few = queries("BODY zebrafish")
    store.deliver_batch([store.DeliveryRequest([mailbox.pk], PARTS + b"%d" % n)
                         for n in range(40)])
    assert queries("BODY zebrafish") == few
    assert search(client, "BODY", "zebrafish") == [2, *range(4, 44)]
