"""IMAP: the same client load against Mailhost and, in the same run, Dovecot
(Debian's dovecot-imapd, configured here on 127.0.0.1 with a throwaway user and
the same messages). Prints each figure for both servers and their ratio.

For each folder size (10,000 messages; add 100,000 with --large): time to
SELECT, UID FETCH 1:* (FLAGS), FETCH of 1,000 whole messages (MB/s), SEARCH on a
header and on body text; then the memory per connection of N clients in IDLE
and how soon they all hear of a message APPENDed by another client.

    .venv/bin/python bench/imap.py                 # 10k folder, 1000 IDLE clients
    .venv/bin/python bench/imap.py --large --idle 300
"""

from __future__ import annotations

import argparse
import imaplib
import os
import resource
import selectors
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Dovecot,
    MailhostInstance,
    add_corpus_argument,
    corpus_messages,
)

USER = "bench@bench.example"
PASSWORD = "bench password 1"
HEADER_NEEDLE = "quarterly-needle"
BODY_NEEDLE = "zebrafishneedle"


def make_messages(corpora: Path, count: int) -> list[bytes]:
    """Real mail from the ham corpus, cycled; every 100th carries the needles."""
    sources = corpus_messages(sorted((corpora / "ham").iterdir())[:500])
    messages = []
    for index in range(count):
        data = sources[index % len(sources)]
        subject = f"bench {index}" + (f" {HEADER_NEEDLE}" if index % 100 == 0 else "")
        extra = f"\r\n{BODY_NEEDLE}\r\n".encode() if index % 100 == 0 else b""
        messages.append(f"X-Bench: {index}\r\nSubject: {subject}\r\n".encode() + data + extra)
    return messages



def tree_rss_kib(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (Dovecot forks one
    process per connection), in KiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


# --- the servers ---------------------------------------------------------------------


class Mailhost:
    name = "Mailhost"

    def __init__(self, folders: dict[str, list[bytes]]) -> None:
        self.instance = MailhostInstance(os.environ.get("DATABASE_URL"))
        self.instance.manage("createdomain", USER.split("@")[1])
        self.instance.manage("createmailbox", USER, "--password-stdin", "--quota", "0",
                             stdin=PASSWORD + "\n")
        spool = Path(self.instance.tmp.name) / "bench-spool"
        for folder, messages in folders.items():
            target = spool / folder
            target.mkdir(parents=True)
            for index, data in enumerate(messages):
                (target / f"{index:07d}").write_bytes(data)
        self.instance.manage("shell", "-c", _FILL.format(user=USER, spool=spool))
        self.process, ports = self.instance.start_listeners("imap")
        self.port = ports["imap"]
        self.pid = self.process.process.pid

    def stop(self) -> None:
        self.process.stop()
        self.instance.cleanup()


_FILL = """
from pathlib import Path
from apps.directory.models import Mailbox
from apps.store import services as store
mailbox = Mailbox.objects.get(address="{user}")
for folder in sorted(Path("{spool}").iterdir()):
    if folder.name != "INBOX":
        store.create_folder(mailbox, folder.name)
    files = sorted(folder.iterdir())
    for start in range(0, len(files), 500):
        requests = [store.DeliveryRequest([mailbox.pk], path.read_bytes(), folder=folder.name,
                                          fallback_to_inbox=False)
                    for path in files[start:start + 500]]
        assert store.deliver_batch(requests) == [None] * len(requests)
"""


# --- the client load ---------------------------------------------------------------------


def login(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=600)
    client.login(USER, PASSWORD)
    return client


def timed(func) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def check(result: tuple) -> tuple:
    if result[0] != "OK":
        raise RuntimeError(result)
    return result


def folder_load(port: int, folder: str, fetch_count: int) -> dict[str, float]:
    client = login(port)
    client.select(folder, readonly=True)  # first look: Dovecot builds its index here
    client.close()
    figures = {"SELECT (s)": timed(lambda: check(client.select(folder, readonly=True)))}
    figures["UID FETCH 1:* FLAGS (s)"] = timed(
        lambda: check(client.uid("FETCH", "1:*", "(FLAGS)")))
    fetched: list[int] = []

    def fetch_bodies() -> None:
        _typ, data = check(client.fetch(f"1:{fetch_count}", "(BODY.PEEK[])"))
        fetched.append(sum(len(item[1]) for item in data if isinstance(item, tuple)))

    seconds = timed(fetch_bodies)
    figures[f"FETCH {fetch_count} bodies (MB/s)"] = fetched[0] / seconds / 1e6
    found: list[int] = []

    def search(*criteria: str) -> None:
        _typ, data = check(client.search(None, *criteria))
        found.append(len(data[0].split()))

    figures["SEARCH HEADER Subject (s)"] = timed(
        lambda: search("HEADER", "Subject", HEADER_NEEDLE))
    figures["SEARCH BODY (s)"] = timed(lambda: search("BODY", BODY_NEEDLE))
    client.logout()
    if found[0] != found[1] or found[0] == 0:
        raise RuntimeError(f"searches found {found}")
    return figures


def idle_figures(server: Mailhost | Dovecot, connections: int,
                 message: bytes) -> dict[str, float]:
    """N clients logged in, INBOX selected, in IDLE: server memory per
    connection (KiB), then how long after an APPEND's OK from another client
    each idler hears "* n EXISTS" (median and p99, seconds)."""
    before = tree_rss_kib(server.pid)
    clients = []
    for _ in range(connections):
        client = login(server.port)
        client.select("INBOX")
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        if not client.readline().startswith(b"+"):
            raise RuntimeError("IDLE refused")
        clients.append(client)
    time.sleep(2)
    after = tree_rss_kib(server.pid)
    figures = {f"memory per IDLE connection, {connections} clients (KiB)":
               (after - before) / connections}
    waiting = selectors.DefaultSelector()
    for client in clients:
        waiting.register(client.sock, selectors.EVENT_READ, bytearray())
    sender = login(server.port)
    check(sender.append("INBOX", None, None, message))
    acked = time.perf_counter()
    latencies: list[float] = []
    while len(latencies) < connections and time.perf_counter() - acked < 120:
        for key, _mask in waiting.select(timeout=1):
            key.data.extend(key.fileobj.recv(65536))  # type: ignore[union-attr]
            if b" EXISTS\r\n" in key.data:
                latencies.append(time.perf_counter() - acked)
                waiting.unregister(key.fileobj)
    sender.logout()
    for client in clients:
        client.sock.close()
    if len(latencies) < connections:
        raise RuntimeError(f"only {len(latencies)} of {connections} idlers heard of the append")
    latencies.sort()
    figures[f"IDLE: told of an APPEND, median of {connections} (s)"] = \
        latencies[len(latencies) // 2]
    figures[f"IDLE: told of an APPEND, p99 of {connections} (s)"] = \
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--large", action="store_true", help="also a 100,000-message folder")
    parser.add_argument("--fetch", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000, help="IDLE connections")
    add_corpus_argument(parser)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle * 2 + 100)), hard))
    sizes = {"INBOX": args.messages}
    if args.large:
        sizes["Large"] = 100_000
    print(f"preparing {sum(sizes.values())} messages …", flush=True)
    folders = {name: make_messages(args.corpus, count) for name, count in sizes.items()}
    results: dict[str, dict[str, float]] = {}
    for make in (lambda: Mailhost(folders),
                 lambda: Dovecot(folders, args.idle, user=USER, password=PASSWORD)):
        started = time.perf_counter()
        server = make()
        print(f"{server.name}: loaded in {time.perf_counter() - started:.1f}s", flush=True)
        try:
            figures: dict[str, float] = {}
            for folder, count in sizes.items():
                for key, value in folder_load(server.port, folder,
                                              min(args.fetch, count)).items():
                    figures[f"{count:>6} msgs: {key}"] = value
            if args.idle:  # --idle 0: the folder figures only
                figures.update(idle_figures(server, args.idle, folders["INBOX"][0]))
            results[server.name] = figures
        finally:
            server.stop()
    print(f"\n{'figure':<58} {'Mailhost':>12} {'Dovecot':>12} {'ratio':>8}")
    for key, value in results["Mailhost"].items():
        reference = results["Dovecot"][key]
        ratio = value / reference if reference else float("nan")
        print(f"{key:<58} {value:>12.3f} {reference:>12.3f} {ratio:>8.2f}")
    print("(ratio = Mailhost / Dovecot: below 1 is better for seconds and memory, "
          "above 1 for MB/s)")


if __name__ == "__main__":
    main()
