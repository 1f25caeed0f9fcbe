"""Mail through a listener process whose blob store is S3 (a real SeaweedFS):
delivered over SMTP, read over IMAP (whole and partial) and POP3 (RETR and
TOP), byte for byte, with nothing of it left on the listener's local disk but
its read cache."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import shutil
import smtplib
from pathlib import Path

import pytest

from apps.store import filed
from apps.store.blobs import get_blob_store
from apps.store.models import Message
from apps.store.s3 import S3BlobStore
from tests.factories import PASSWORD, make_mailbox
from tests.pop3.helpers import retrieved

pytestmark = pytest.mark.slow

BODY = b"".join(b"line %d of a message kept in an object store\r\n" % n for n in range(200))
MESSAGE = (b"From: Sender <sender@remote.example>\r\nTo: alice@example.org\r\n"
           b"Subject: through S3\r\nMessage-ID: <s3-e2e@remote.example>\r\n\r\n"
           + BODY + b".a line that POP3 dot-stuffs\r\n")


def _fetch(client: imaplib.IMAP4, item: str) -> bytes:
    status, data = client.uid("FETCH", "1", f"({item})")
    assert status == "OK", data
    return data[0][1]


def message_blob(blob_id: str) -> bytes:
    """The blob as the server holds it (not through the cache)."""
    store = get_blob_store()
    return store.client.get_object(Bucket=store.location.bucket,
                                   Key=store.location.key(blob_id))["Body"].read()


def _empty(directory: Path) -> None:
    """Drop the read cache, so that the next read is a GET from the server."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()


def test_smtp_delivery_is_read_over_imap_and_pop3_from_s3(
        s3_store: S3BlobStore, listener_process, settings):
    mailbox = make_mailbox("alice@example.org")
    node = listener_process(["smtp", "imap", "pop3"])
    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) as client:
        client.ehlo("client.test")
        assert client.sendmail("sender@remote.example", ["alice@example.org"], MESSAGE) == {}

    (message,) = Message.objects.filter(folder__mailbox=mailbox)
    stored = filed.read_message(message)  # the blob with the fields added at filing
    assert stored.endswith(MESSAGE) and stored != MESSAGE
    assert s3_store.exists(message.blob_id)
    local_root = Path(settings.MAILHOST_STORAGE_ROOT)
    assert not any(re.fullmatch(r"[0-9a-f]{2}", entry.name)
                   for entry in (os.scandir(local_root) if local_root.exists() else ()))

    _empty(s3_store.cache.directory)
    imap = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=30)
    try:
        imap.login(mailbox.address, PASSWORD)
        imap.select("INBOX")
        header = stored.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        # What a client lists and previews a folder with: ranged GETs, nothing cached.
        assert _fetch(imap, "BODY.PEEK[HEADER]") == header
        assert _fetch(imap, "BODY.PEEK[HEADER.FIELDS (SUBJECT)]") == (
            b"Subject: through S3\r\n\r\n")
        assert _fetch(imap, "BODY.PEEK[]<0.300>") == stored[:300]
        assert not list(s3_store.cache.directory.iterdir())
        # A later chunk reads the whole message once; the cache serves the rest.
        assert _fetch(imap, "BODY.PEEK[]<100.500>") == stored[100:600]
        assert (s3_store.cache.directory / message.blob_id).read_bytes() == message_blob(
            message.blob_id)
        assert _fetch(imap, "BODY.PEEK[]") == stored
        text = MESSAGE.partition(b"\r\n\r\n")[2]
        assert _fetch(imap, "BODY.PEEK[TEXT]<20.60>") == text[20:80]
        assert _fetch(imap, "BINARY.PEEK[1]<20.60>") == text[20:80]  # RFC 3516 §4.2
        assert _fetch(imap, f"BODY.PEEK[]<{len(stored) - 10}.1000>") == stored[-10:]
    finally:
        imap.logout()

    _empty(s3_store.cache.directory)
    pop = poplib.POP3("127.0.0.1", node.ports["pop3"], timeout=30)
    try:
        pop.user(mailbox.address)
        pop.pass_(PASSWORD)
        _, top_lines, _ = pop.top(1, 3)
        header, _, _ = stored.partition(b"\r\n\r\n")
        first_lines = b"".join(line + b"\r\n" for line in BODY.split(b"\r\n")[:3])
        assert b"".join(line + b"\r\n" for line in top_lines) == (
            header + b"\r\n\r\n" + first_lines)
        data, octets = retrieved(pop, 1)
        assert data == stored and octets >= len(stored)
    finally:
        pop.quit()
