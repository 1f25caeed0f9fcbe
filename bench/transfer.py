"""Import and export: ``manage.py importmail``/``exportmail`` beside Dovecot's
own tools on the same messages, in one run.

The same N real messages (ham corpus, cycled, each made unique by a header)
are, for Mailhost, on a throwaway data directory (SQLite unless DATABASE_URL
is set), and for Dovecot, a throwaway configuration and Maildir:

- an mbox imported: ``importmail --mbox`` beside ``doveadm import`` of it;
- the same mbox again: ``importmail`` finds every message there already
  (doveadm import has no such mode; its first import is the reference);
- a Maildir export: ``exportmail --maildir`` beside ``doveadm backup`` to a
  new Maildir;
- a remote IMAP account (Dovecot) imported: ``importmail --imap`` beside the
  floor of it, a client fetching every message's bytes (BODY.PEEK[]) from the
  same server and dropping them.

    flock /tmp/bench.lock .venv/bin/python bench/transfer.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import django
from common import Dovecot, MailhostInstance, add_corpus_argument, corpus_messages

# The mbox writer of apps/transfer names the store's flag bits (its models).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")
django.setup()

from apps.transfer.formats import mbox_entry  # noqa: E402

USER, PASSWORD = "bench@transfer.example", "bench password 1"


def make_messages(corpora: Path, count: int) -> list[bytes]:
    sources = corpus_messages(sorted((corpora / "ham").iterdir()))
    return [f"X-Bench: {index}\r\n".encode() + sources[index % len(sources)]
            for index in range(count)]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def fetch_all(port: int) -> None:
    """Every message's bytes from the IMAP server, as importmail fetches them."""
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=600) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        for start in range(0, len(uids), 200):
            client.fetch(uids[start:start + 200], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    add_corpus_argument(parser)
    args = parser.parse_args()
    messages = make_messages(args.corpus, args.messages)
    size = sum(len(m) for m in messages)
    work = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    work.chmod(0o755)  # Dovecot's mail processes run as "mail"
    mbox = work / "in.mbox"
    now = datetime.now(UTC)
    with mbox.open("wb") as out:
        for data in messages:
            out.write(mbox_entry(data, now))
    print(f"{args.messages} messages, {size / 1e6:.1f} MB", flush=True)

    mailhost = MailhostInstance(os.environ.get("DATABASE_URL"))
    dovecot = Dovecot({}, connections=10, user=USER, password=PASSWORD)
    conf = str(dovecot.base / "dovecot.conf")
    results: list[tuple[str, float, float]] = []
    try:
        mailhost.manage("createdomain", USER.split("@")[1])
        mailhost.manage("createmailbox", USER, "--password-stdin", "--quota", "0",
                        stdin=PASSWORD + "\n")
        subprocess.run(["chown", "-R", "mail:mail", str(work)], check=True)
        results.append((
            "mbox import",
            timed(lambda: mailhost.manage("importmail", USER, "--mbox", str(mbox),
                                          "--no-progress")),
            timed(lambda: subprocess.run(
                ["doveadm", "-c", conf, "import", "-u", USER,
                 f"mbox:{work}/mboxroot:INBOX={mbox}", "", "all"], check=True))))
        results.append((
            "mbox import again (nothing new)",
            timed(lambda: mailhost.manage("importmail", USER, "--mbox", str(mbox),
                                          "--no-progress")),
            results[0][1]))
        results.append((
            "Maildir export",
            timed(lambda: mailhost.manage("exportmail", USER, "--maildir",
                                          str(work / "ours"), "--no-progress")),
            timed(lambda: subprocess.run(
                ["doveadm", "-c", conf, "backup", "-u", USER, f"maildir:{work}/theirs"],
                check=True))))
        importer = "importer@transfer.example"
        mailhost.manage("createmailbox", importer, "--password-stdin", "--quota", "0",
                        stdin=PASSWORD + "\n")
        password_file = work / "password"
        password_file.write_text(PASSWORD)
        results.append((
            "IMAP import from Dovecot",
            timed(lambda: mailhost.manage(
                "importmail", importer, "--imap", f"127.0.0.1:{dovecot.port}", "--tls",
                "none", "--user", USER, "--password-file", str(password_file),
                "--no-progress")),
            timed(lambda: fetch_all(dovecot.port))))
    finally:
        dovecot.stop()
        mailhost.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'figure':<34} {'Mailhost':>16} {'reference':>16} {'ratio':>7}")
    for name, ours, theirs in results:
        print(f"{name:<34} {args.messages / ours:>10.0f} msg/s {args.messages / theirs:>10.0f}"
              f" msg/s {ours / theirs:>7.2f}")
    print("(references: doveadm import; the first import; doveadm backup; a client "
          "fetching every message from Dovecot. ratio = Mailhost time / reference time)")


if __name__ == "__main__":
    main()
