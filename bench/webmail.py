"""Webmail: server time of the message list's first page and of opening a
1 MB HTML message, in a 100,000-message folder, beside the reference measured
in the same run: the same listing fetched over IMAP from Mailhost's own
listener (UID FETCH of ENVELOPE, FLAGS and RFC822.SIZE for the newest 50).
Then the search box: ``from:``, ``subject:`` and a bare word (headers and
body text, IMAP's TEXT), each with its target of one second.

    .venv/bin/python bench/webmail.py [--messages 100000] [--runs 15]

The folder is filled through the store (``deliver_batch`` in big batches)
with 500 real messages from the ham corpus cycled, so blobs are shared as
the store shares identical messages. Web timings use Django's test client in
this process (server time: routing, queries, templates, no network); each is
the median of ``--runs`` runs after three warm-up runs. Everything runs in a
temporary data directory with SQLite (or DATABASE_URL if set).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(tempfile.mkdtemp(prefix="bench-webmail-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "mailhost.settings",
    "MAILHOST_DATA_DIR": str(DATA),
    "MAILHOST_FAST_PASSWORD_HASHER": "1",
    "MAILHOST_LOG_LEVEL": "WARNING",
    "MAILHOST_ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
})
os.environ.pop("REDIS_URL", None)

import django  # noqa: E402

django.setup()

from common import Background, add_corpus_argument, corpus_messages  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from apps.directory import services as directory  # noqa: E402
from apps.store import services as store  # noqa: E402
from apps.store.models import Message  # noqa: E402

USER = "bench@bench.example"
PASSWORD = "bench password 1"
BATCH = 5000
LIST_TARGET_MS = 100
OPEN_TARGET_MS = 200
SEARCH_TARGET_MS = 1000
# (label, query): a sender, a subject word in ~2 % of the corpus, and a word of
# the body text in ~4 % (as a bare word it is searched in headers and body).
SEARCHES = [("search from: in the folder", "from:shop"),
            ("search subject: in the folder", "subject:entrepreneurs"),
            ("search a word (headers and body)", "kernel")]


def big_html_message(size: int = 1_000_000) -> bytes:
    """A newsletter-like HTML message of about ``size`` bytes: tables, styles,
    links and remote images, as real ones are."""
    row = ('<tr><td style="padding:8px;color:#333;font-family:Arial">'
           '<a href="https://shop.example/item/{n}">Item {n}</a> – a fine thing, '
           'now cheaper than ever &amp; delivered free.</td>'
           '<td><img src="https://cdn.example/i/{n}.png" width="64" height="64" alt="item"></td>'
           '</tr>\r\n')
    rows, total, n = [], 0, 0
    while total < size:
        line = row.format(n=n)
        rows.append(line)
        total += len(line)
        n += 1
    html = ("<html><head><style>td{font-size:14px}</style></head><body><h1>Offers</h1>"
            "<table>\r\n" + "".join(rows) + "</table><script>alert(1)</script></body></html>")
    head = ("From: Shop <news@shop.example>\r\nTo: bench@bench.example\r\n"
            "Subject: A 1 MB newsletter\r\nMessage-ID: <big@shop.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n")
    return head.encode() + html.encode()


def fill(mailbox_pk: int, count: int, corpora: Path) -> None:
    sources = corpus_messages(sorted((corpora / "ham").iterdir())[:500])
    started = time.perf_counter()
    done = 0
    while done < count:
        size = min(BATCH, count - done)
        store.deliver_batch([store.DeliveryRequest([mailbox_pk], sources[(done + i) % len(sources)])
                             for i in range(size)])
        done += size
    print(f"filled INBOX with {count:,} messages in {time.perf_counter() - started:.1f} s")


def median_ms(action: Callable[[], object], runs: int) -> float:
    for _ in range(3):
        action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def web_get(client: Client, url: str) -> Callable[[], object]:
    def get() -> object:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return response
    return get


def imap_listing(runs: int, newest: list[int]) -> float:
    """Median ms of UID FETCH (ENVELOPE FLAGS RFC822.SIZE) of the newest 50
    against the real IMAP listener, in a process of its own."""
    env = dict(os.environ, IMAP_PORT="0", MAILHOST_BIND="127.0.0.1", MAILHOST_LOG_LEVEL="INFO")
    server = Background([sys.executable, str(ROOT / "manage.py"), "runmailservers",
                         "--only", "imap"], env=env)
    try:
        port = int(server.wait_for(r"listening name=imap address=\S+ port=(\d+)").group(1))
        client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        client.login(USER, PASSWORD)
        client.select("INBOX", readonly=True)
        uid_set = ",".join(map(str, newest))

        def fetch() -> None:
            status, data = client.uid("FETCH", uid_set, "(ENVELOPE FLAGS RFC822.SIZE)")
            assert status == "OK" and len([d for d in data if d]) >= len(newest)

        result = median_ms(fetch, runs)
        client.logout()
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    add_corpus_argument(parser)
    args = parser.parse_args()

    call_command("migrate", "--no-input", verbosity=0)
    directory.create_domain("bench.example")
    mailbox = directory.create_mailbox(USER, PASSWORD)
    fill(mailbox.pk, args.messages, args.corpus)
    big = store.deliver([mailbox], big_html_message())[0]
    if connection.vendor == "postgresql":
        # Autovacuum analyses a table after a bulk insert like this one; do it now
        # so that the timings do not depend on when it gets round to it.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    inbox = store.get_folder(mailbox, "INBOX")
    print(f"INBOX holds {inbox.message_count:,} messages; the newest is a "
          f"{big.size / 1e6:.2f} MB HTML message")

    client = Client()
    client.force_login(mailbox.user)
    list_ms = median_ms(web_get(client, "/mail/"), args.runs)
    page_200_ms = median_ms(web_get(client, f"/mail/folder/{inbox.pk}/?page=200"), args.runs)
    reading_ms = median_ms(web_get(client, f"/mail/message/{big.pk}/"), args.runs)
    frame_ms = median_ms(web_get(client, f"/mail/message/{big.pk}/body/"), args.runs)
    search_ms = {label: median_ms(web_get(client, f"/mail/search/?q={query}&in={inbox.pk}"),
                                  max(3, args.runs // 3))
                 for label, query in SEARCHES}

    newest = sorted(Message.objects.filter(folder=inbox).order_by("-uid")
                    .values_list("uid", flat=True)[:50])
    imap_ms = imap_listing(args.runs, newest)

    print()
    print(f"{'':44}{'webmail':>12}{'IMAP (ref.)':>14}{'ratio':>8}")
    print(f"{'message list, first page (50 of ' + format(args.messages, ',') + ')':44}"
          f"{list_ms:>9.1f} ms{imap_ms:>11.1f} ms{list_ms / imap_ms:>8.2f}")
    print(f"{'message list, page 200':44}{page_200_ms:>9.1f} ms")
    open_ms = reading_ms + frame_ms
    print(f"{'open 1 MB HTML message (page + frame)':44}{open_ms:>9.1f} ms"
          f"   (page {reading_ms:.1f} ms, sanitised frame {frame_ms:.1f} ms)")
    for label, ms in search_ms.items():
        print(f"{label:44}{ms:>9.1f} ms")
    print()
    list_verdict = "met" if list_ms < LIST_TARGET_MS else "MISSED"
    open_verdict = "met" if open_ms < OPEN_TARGET_MS else "MISSED"
    search_verdict = "met" if max(search_ms.values()) < SEARCH_TARGET_MS else "MISSED"
    print(f"targets: list < {LIST_TARGET_MS} ms: {list_verdict}; "
          f"1 MB HTML < {OPEN_TARGET_MS} ms: {open_verdict}; "
          f"every search < {SEARCH_TARGET_MS} ms: {search_verdict}")


if __name__ == "__main__":
    main()
