"""IMAP: the same client load against Mailhost and, in the same run, Dovecot
(Debian's dovecot-imapd, configured here on 127.0.0.1 with a throwaway user and
the same messages). Prints each figure for both servers and their ratio.

For each folder size (10,000 messages; add 100,000 with --large): time to
SELECT, UID FETCH 1:* (FLAGS), FETCH of 1,000 whole messages (MB/s), SEARCH on a
header and on body text, each timed after one untimed pass of the same commands
(Dovecot's first SELECT builds its index, its first FETCH and SEARCH fill its
cache: both servers are timed warm). Then N clients in IDLE on INBOX: the
listener's memory (RSS in all, and per idler), how soon each idler hears of a
message APPENDed by another client (median and p99), and the server's CPU time
for that APPEND and its news, per idler (steadier than wall time under load).
Dovecot forks a process per connection (about 2 MB each), so it
gets --dovecot-idle of them (1,000 unless said); the table names both counts.

    .venv/bin/python bench/imap.py                 # 10k folder, 1000 IDLE clients
    .venv/bin/python bench/imap.py --large --idle 10000

Building a 100,000-message folder takes minutes (the store parses and indexes
each message), so the built data are kept under --cache (default
/tmp/mailhost-bench-imap), keyed by the folder sizes, the corpus and the
database: Mailhost's data directory (blobs hard-linked, the SQLite file copied;
on PostgreSQL a template database beside DATABASE_URL's, which the bench drops
and recreates from it) and Dovecot's Maildir. --rebuild ignores the cache.
Beyond the first 10,000, a folder's messages are copies of those (as COPY
makes them: Mailhost shares their blobs, Dovecot gets as many files).
The idlers are asyncio protocols in this process (no thread per connection);
the listener raises its open-file limit itself (``runmailservers``), this
process raises its own soft limit to the hard one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import imaplib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Dovecot,
    MailhostInstance,
    add_corpus_argument,
    corpus_messages,
    write_maildir_folder,
)

USER = "bench@bench.example"
PASSWORD = "bench password 1"
HEADER_NEEDLE = "quarterly-needle"
BODY_NEEDLE = "zebrafishneedle"
# Part of the cache key: raise it when the messages or the way they are filed change.
BUILD = 3
# Distinct messages: a larger folder holds copies of them after the first ones
# (``store.copy`` shares their blobs, as COPY does), as many for Dovecot. Parsing
# and indexing 100,000 messages took over an hour on a loaded 2-core machine.
DISTINCT = 10_000


def corpus_sources(corpora: Path) -> list[bytes]:
    return corpus_messages(sorted((corpora / "ham").iterdir())[:500])


def message_at(sources: list[bytes], index: int) -> bytes:
    """Real mail from the ham corpus, cycled; every 100th carries the needles.
    Beyond DISTINCT, a copy of an earlier one."""
    index %= DISTINCT
    data = sources[index % len(sources)]
    subject = f"bench {index}" + (f" {HEADER_NEEDLE}" if index % 100 == 0 else "")
    extra = f"\r\n{BODY_NEEDLE}\r\n".encode() if index % 100 == 0 else b""
    return f"X-Bench: {index}\r\nSubject: {subject}\r\n".encode() + data + extra


def _tree(root_pid: int) -> list[Path]:
    """The /proc entries of a process and all its descendants (Dovecot forks
    one process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        found.append(Path(f"/proc/{pid}"))
        stack += children.get(pid, [])
    return found


def tree_rss_kib(root_pid: int) -> int:
    """Resident memory of a process and its descendants, in KiB."""
    total = 0
    for entry in _tree(root_pid):
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) used so far by a process and its live descendants:
    a figure that load on a shared machine does not inflate as it does wall time."""
    ticks = 0
    for entry in _tree(root_pid):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# --- the data, built once ---------------------------------------------------------------


class BuildCache:
    """Where the built data of one set of parameters are kept between runs."""

    def __init__(self, root: Path, sizes: dict[str, int], corpora: Path,
                 database_url: str | None, rebuild: bool) -> None:
        messages = [BUILD, sizes, str(corpora.resolve())]
        self.key = _digest([*messages, database_url or "sqlite"])
        self.dir = root / self.key
        # Dovecot's Maildir is the same whatever Mailhost's database.
        self.dovecot_dir = root / f"dovecot-{_digest(messages)}"
        self.database_url = database_url
        for kept in (self.dir, self.dovecot_dir):
            if rebuild and kept.exists():
                shutil.rmtree(kept)
            kept.mkdir(parents=True, exist_ok=True)

    @property
    def template(self) -> str:
        return f"mh_bench_imap_{self.key}"

    def mailhost_ready(self) -> bool:
        return (self.dir / "mailhost.done").exists()

    def dovecot_maildir(self, sizes: dict[str, int], sources: list[bytes]) -> Path:
        """The first user's Maildir, written once."""
        maildir = self.dovecot_dir / "mail"
        if not (self.dovecot_dir / "done").exists():
            shutil.rmtree(maildir, ignore_errors=True)
            for folder, count in sizes.items():
                write_maildir_folder(maildir, folder,
                                     (message_at(sources, i) for i in range(count)))
            (maildir / "tmp").mkdir(exist_ok=True)
            (self.dovecot_dir / "done").touch()
        return maildir

    def seed(self, data_dir: Path) -> None:
        """Before migrating: the cached data directory (and database), or an
        empty database."""
        if self.database_url:
            _postgres(self.database_url, self.template if self.mailhost_ready() else None)
        if not self.mailhost_ready():
            return
        source = self.dir / "mailhost"
        for entry in source.iterdir():
            target = data_dir / entry.name
            if ".sqlite3" in entry.name:  # the database is written: a copy of its own
                shutil.copy2(entry, target)
            else:  # blobs, keys, certificate: never rewritten in place
                subprocess.run(["cp", "-al", str(entry), str(target)], check=True)

    def keep(self, data_dir: Path) -> None:
        """After the fill, before any listener runs: remember what was built."""
        kept = self.dir / "mailhost"
        shutil.rmtree(kept, ignore_errors=True)
        subprocess.run(["cp", "-al", str(data_dir), str(kept)], check=True)
        for entry in kept.glob("*.sqlite3*"):
            entry.unlink()
            shutil.copy2(data_dir / entry.name, entry)
        if self.database_url:
            _postgres(self.database_url, None, template_of=self.template)
        (self.dir / "mailhost.done").touch()


def _digest(spec: list) -> str:
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _postgres(url: str, template: str | None, *, template_of: str | None = None) -> None:
    """Drop and recreate the database of ``url`` (from ``template`` if given),
    or with ``template_of``: save it as that template database."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")),
                         autocommit=True) as admin:
        if template_of is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{template_of}"')
            admin.execute(f'CREATE DATABASE "{template_of}" TEMPLATE "{name}"')
            return
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"'
                      + (f' TEMPLATE "{template}"' if template else ""))


def fill(user: str, sizes_json: str, corpora: str) -> None:
    """In ``manage.py shell``: the folders filled through the store, a
    thousand messages per ``deliver_batch`` (one transaction, one round of
    fsyncs each), up to DISTINCT; the rest (and a later folder's messages that
    an earlier folder holds already) by ``store.copy``."""
    from apps.directory.models import Mailbox
    from apps.store import services as store

    mailbox = Mailbox.objects.get(address=user)
    sources = corpus_sources(Path(corpora))
    source, distinct = None, 0  # the folder holding messages 0 … distinct - 1 at UIDs 1 …
    for name, count in json.loads(sizes_json).items():
        if name != "INBOX":
            store.create_folder(mailbox, name)
        folder = store.get_folder(mailbox, name)
        copied = 0
        if distinct < min(count, DISTINCT):
            for start in range(0, min(count, DISTINCT), 1000):
                requests = [store.DeliveryRequest([mailbox.pk], message_at(sources, index),
                                                  folder=name, fallback_to_inbox=False)
                            for index in range(start, min(count, DISTINCT, start + 1000))]
                assert store.deliver_batch(requests) == [None] * len(requests)
            source, distinct = folder, min(count, DISTINCT)
            copied = distinct
        while copied < count:
            first = copied % DISTINCT
            size = min(5000, count - copied, DISTINCT - first)
            store.copy(source, range(first + 1, first + size + 1), folder)
            copied += size


def build_mailhost(cache: BuildCache, sizes: dict[str, int], corpora: Path,
                   ) -> MailhostInstance:
    """A Mailhost instance with the folders filled: from the cache, else
    built and kept there."""
    instance = MailhostInstance(cache.database_url, seed=cache.seed)
    if not cache.mailhost_ready():
        instance.manage("createdomain", USER.split("@")[1])
        instance.manage("createmailbox", USER, "--password-stdin", "--quota", "0",
                        stdin=PASSWORD + "\n")
        instance.manage("shell", "-c", (
            "import sys; sys.path.insert(0, 'bench'); from imap import fill; "
            f"fill({USER!r}, {json.dumps(sizes)!r}, {str(corpora)!r})"))
        cache.keep(Path(instance.tmp.name))
    return instance


# --- the servers ---------------------------------------------------------------------


class Mailhost:
    name = "Mailhost"

    def __init__(self, cache: BuildCache, sizes: dict[str, int], corpora: Path,
                 connections: int) -> None:
        self.instance = build_mailhost(cache, sizes, corpora)
        self.instance.env["MAILHOST_MAX_CONNECTIONS"] = str(connections + 100)
        self.process, ports = self.instance.start_listeners("imap")
        self.port = ports["imap"]
        self.pid = self.process.process.pid

    def stop(self) -> None:
        self.process.stop()
        self.instance.cleanup()


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
    check(client.close())
    client.logout()
    if found[0] != found[1] or found[0] == 0:
        raise RuntimeError(f"searches found {found}")
    return figures


class Idler(asyncio.Protocol):
    """One client: LOGIN, SELECT INBOX, IDLE; then it notes when it first
    reads "* n EXISTS". A state machine on received lines, no thread."""

    STEPS = (b"a LOGIN \"%s\" \"%s\"\r\n" % (USER.encode(), PASSWORD.encode()),
             b"b SELECT INBOX\r\n", b"c IDLE\r\n")

    def __init__(self) -> None:
        self.buffer = b""
        self.step = -1  # waiting for the greeting
        self.ready = asyncio.get_running_loop().create_future()
        self.heard = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ready.done():
            if not self.heard.done() and re.search(rb"\* \d+ EXISTS\r\n", self.buffer + data):
                self.heard.set_result(time.perf_counter())
            self.buffer = data[-20:]
            return
        self.buffer += data
        while b"\r\n" in self.buffer and not self.ready.done():
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            expected = (b"* OK", b"a OK", b"b OK", b"+")[self.step + 1]
            if line.startswith(expected):
                self.step += 1
                if self.step < len(self.STEPS):
                    assert self.transport is not None
                    self.transport.write(self.STEPS[self.step])
                else:
                    self.ready.set_result(None)
            elif line[:1] != b"*":
                self.ready.set_exception(RuntimeError(f"idler refused: {line!r}"))

    def connection_lost(self, error: Exception | None) -> None:
        for future in (self.ready, self.heard):
            if not future.done():
                future.set_exception(ConnectionError("closed"))


async def _idle_figures(server: Mailhost | Dovecot, connections: int,
                        message: bytes) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    before = tree_rss_kib(server.pid)
    idlers: list[Idler] = []
    opening = asyncio.Semaphore(50)  # logins and SELECTs in flight at once

    async def open_one() -> None:
        async with opening:
            _transport, idler = await loop.create_connection(Idler, "127.0.0.1", server.port)
            await asyncio.wait_for(idler.ready, 300)
            idlers.append(idler)

    started = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(connections)))
    opened = time.perf_counter() - started
    await asyncio.sleep(2)
    after = tree_rss_kib(server.pid)

    def append() -> float:
        sender = login(server.port)
        check(sender.append("INBOX", None, None, message))
        acked = time.perf_counter()
        sender.logout()
        return acked

    cpu = tree_cpu_seconds(server.pid)
    acked = await loop.run_in_executor(None, append)
    done, _pending = await asyncio.wait([idler.heard for idler in idlers], timeout=120)
    latencies = sorted(future.result() - acked for future in done if future.exception() is None)
    await asyncio.sleep(1)  # the server's last writes reached the last idler: done
    cpu = tree_cpu_seconds(server.pid) - cpu
    for idler in idlers:
        assert idler.transport is not None
        idler.transport.abort()
    if len(latencies) < connections:
        raise RuntimeError(f"only {len(latencies)} of {connections} idlers heard of the append")
    return {
        "IDLE: clients logged in, INBOX selected": connections,
        "IDLE: time to open them all (s)": opened,
        "IDLE: server memory with them all (MiB)": after / 1024,
        "IDLE: memory per connection (KiB)": (after - before) / connections,
        "IDLE: told of an APPEND, median (s)": latencies[len(latencies) // 2],
        "IDLE: told of an APPEND, p99 (s)":
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        # The APPEND's session and the news to every idler, per idler.
        "IDLE: server CPU per idler told (ms)": cpu * 1000 / connections,
    }


def idle_figures(server: Mailhost | Dovecot, connections: int,
                 message: bytes) -> dict[str, float]:
    """N clients logged in, INBOX selected, in IDLE: the server's memory, then
    how long after an APPEND's OK from another client each idler hears
    "* n EXISTS" (median and p99, seconds)."""
    return asyncio.run(_idle_figures(server, connections, message))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--large", action="store_true", help="also a 100,000-message folder")
    parser.add_argument("--fetch", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000, help="IDLE connections to Mailhost")
    parser.add_argument("--dovecot-idle", type=int, default=None,
                        help="IDLE connections to Dovecot (default: --idle, at most 1000)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mailhost-bench-imap"))
    parser.add_argument("--rebuild", action="store_true", help="build the folders again")
    parser.add_argument("--build-only", action="store_true",
                        help="build the cached data and stop (no timing: no need "
                             "to hold the benchmark lock meanwhile)")
    parser.add_argument("--only", choices=("Mailhost", "Dovecot"),
                        help="one server (no ratios): to profile one side")
    add_corpus_argument(parser)
    args = parser.parse_args()
    dovecot_idle = min(args.idle, 1000) if args.dovecot_idle is None else args.dovecot_idle
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < max(args.idle, dovecot_idle) + 100:
        raise SystemExit(f"the open-file limit is {hard}: too few for the idlers")
    sizes = {"INBOX": args.messages}
    if args.large:
        sizes["Large"] = 100_000
    cache = BuildCache(args.cache, sizes, args.corpus, os.environ.get("DATABASE_URL"),
                       args.rebuild)
    sources = corpus_sources(args.corpus)
    print(f"{sum(sizes.values())} messages, built data in {cache.dir}", flush=True)
    if args.build_only:
        build_mailhost(cache, sizes, args.corpus).cleanup()
        cache.dovecot_maildir(sizes, sources)
        return
    servers: dict[str, Callable[[], Mailhost | Dovecot]] = {
        "Mailhost": lambda: Mailhost(cache, sizes, args.corpus, args.idle),
        "Dovecot": lambda: Dovecot({}, dovecot_idle, user=USER, password=PASSWORD,
                                   maildir=cache.dovecot_maildir(sizes, sources)),
    }
    results: dict[str, dict[str, float]] = {}
    for name, make in servers.items():
        if args.only and name != args.only:
            continue
        started = time.perf_counter()
        server = make()
        print(f"{name}: ready in {time.perf_counter() - started:.1f}s", flush=True)
        try:
            figures: dict[str, float] = {}
            for folder, count in sizes.items():
                fetch = min(args.fetch, count)
                warmed = time.perf_counter()
                folder_load(server.port, folder, fetch)  # the warm-up pass, untimed
                print(f"{name}: {folder} warmed in {time.perf_counter() - warmed:.1f}s",
                      flush=True)
                for key, value in folder_load(server.port, folder, fetch).items():
                    figures[f"{count:>6} msgs: {key}"] = value
            count = args.idle if name == "Mailhost" else dovecot_idle
            if count:  # --idle 0: the folder figures only
                figures.update(idle_figures(server, count, message_at(sources, 0)))
            results[name] = figures
            print(f"{name}: " + json.dumps({k: round(v, 4) for k, v in figures.items()}),
                  flush=True)
        finally:
            server.stop()
    if len(results) < 2:
        return
    print(f"\n{'figure':<58} {'Mailhost':>12} {'Dovecot':>12} {'ratio':>8}")
    for key, value in results["Mailhost"].items():
        reference = results["Dovecot"][key]
        ratio = value / reference if reference else float("nan")
        print(f"{key:<58} {value:>12.3f} {reference:>12.3f} {ratio:>8.2f}")
    print("(ratio = Mailhost / Dovecot: below 1 is better for seconds and memory, "
          "above 1 for MB/s)")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
