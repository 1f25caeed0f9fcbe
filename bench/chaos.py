"""Chaos rounds: the whole platform under mixed load while a random process is
SIGKILLed and restarted every few seconds; then every message is accounted for.

Mailhost runs as the Procfile runs it: ``runmailservers`` (SMTP, submission,
IMAP, POP3), two Celery workers, beat, and the web (gunicorn). Each process is
a process group of its own and is killed whole (a worker with its pool child,
gunicorn with its worker), as a crash of that machine part would. The load:

- inbound SMTP from outside to plain mailboxes, to an alias of two mailboxes,
  to a mailbox with a small quota, and to aliases forwarding outside;
- submission (AUTH) to remote addresses, which the transport map sends to a
  sink in this process that refuses ``perm-*`` recipients (550), defers each
  ``temp-*`` recipient once (451) and now and then answers DATA with 451;
- IMAP APPEND into a folder, then MOVE to another or STORE \\Deleted + EXPUNGE;
- POP3 RETR and DELE of everything in a mailbox, then QUIT.

Every message carries a unique token in its Subject. After the rounds, the
load stops, the platform drains its queue and spool (short claim and retry
settings), stops, the garbage collector runs, and the tally checks that each
acknowledged message is exactly once where it belongs (mailbox and folder, or
at the sink, or bounced to its sender), that nothing is ever twice in a
mailbox, that outbound duplicates are counted (SMTP allows them when a kill
falls between the remote 250 and our commit), that no blob is orphaned and
that no queue or spool entry is stuck.

    flock /tmp/bench.lock .venv/bin/python bench/chaos.py --rounds 20
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_chaos REDIS_URL=redis://127.0.0.1:6379/10 \\
        flock /tmp/bench.lock .venv/bin/python bench/chaos.py   # the database is emptied first
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import imaplib
import os
import poplib
import random
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, free_port, wait_for_port

DOMAIN = "chaos.example"
PASSWORD = "chaos password 1"
REMOTE = "remote.example"
TOKEN = re.compile(rb"CHAOS-[a-z]+-\d+")
QUOTA = 60_000  # bytes: the "full" mailbox fills after a few messages

# Short timings, through the existing settings: a claim left by a killed worker
# expires in seconds, retries come after a second or two, overdue spool rows are
# filed after a few seconds, a POP3 lock of a killed listener lapses quickly.
TIMINGS = {
    "MAILHOST_QUEUE_INTERVAL": "1",
    "MAILHOST_QUEUE_CLAIM_SECONDS": "6",
    "MAILHOST_QUEUE_RETRY_MIN": "1",
    "MAILHOST_QUEUE_RETRY_MAX": "2",
    "MAILHOST_QUEUE_FOLLOW_UP_SECONDS": "2",
    "MAILHOST_QUEUE_KICK_TIMEOUT": "3",
    "MAILHOST_DELIVERY_TIMEOUT": "10",
    "MAILHOST_SPOOL_SWEEP_INTERVAL": "2",
    "MAILHOST_ANTISPAM_TIMEOUT": "4",
    "MAILHOST_POP3_LOCK_SECONDS": "4",
    "MAILHOST_SHUTDOWN_GRACE": "3",
    "MAILHOST_WORKER_HEARTBEAT_INTERVAL": "5",
}


def token_of(data: bytes) -> str | None:
    """The token in a message's Subject, if it carries one of its own."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = re.search(rb"^Subject: chaos (CHAOS-[a-z]+-\d+)", head, re.MULTILINE)
    return match.group(1).decode() if match else None


def tokens_in(data: bytes) -> set[str]:
    return {t.decode() for t in TOKEN.findall(data)}


# --- the remote side -------------------------------------------------------------------


class Sink:
    """The remote domains' server (aiosmtpd in a thread of this process)."""

    def __init__(self, seed: int) -> None:
        from aiosmtpd.controller import Controller

        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.deferred: set[str] = set()
        # (monotonic time, sender, recipients, data) of each message accepted
        self.received: list[tuple[float, str, list[str], bytes]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_RCPT(self, server, session, envelope, address, options):
        local = address.split("@")[0].lower()
        if local.startswith("perm"):
            return "550 5.1.1 No such user here"
        if local.startswith("temp"):
            with self.lock:
                if address not in self.deferred:
                    self.deferred.add(address)
                    return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.random.random() < 0.05:
                return "451 4.3.0 Transient trouble, try again"
            self.received.append((time.monotonic(), envelope.mail_from,
                                  list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"

    def stop(self) -> None:
        self.controller.stop()


# --- the platform --------------------------------------------------------------------------


class Platform:
    """Listeners, two workers, beat and web, each restartable by name."""

    NAMES = ("mail", "worker1", "worker2", "beat", "web")

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in ("smtp", "submission", "imap", "pop3", "web")}
        for name in ("smtp", "submission", "imap", "pop3"):
            self.env[f"{name.upper()}_PORT"] = str(self.ports[name])
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = data_dir / "chaos-logs"
        self.logs.mkdir(exist_ok=True)

    def command(self, name: str) -> list[str]:
        if name == "mail":
            return [PYTHON, "manage.py", "runmailservers", "--only",
                    "smtp,submission,imap,pop3"]
        if name.startswith("worker"):
            return [PYTHON, "-m", "celery", "-A", "mailhost", "worker", "--concurrency", "1",
                    "--hostname", f"{name}@%h", "--loglevel", "WARNING"]
        if name == "beat":
            return [PYTHON, "-m", "celery", "-A", "mailhost", "beat", "--loglevel", "WARNING",
                    "--schedule", str(self.data_dir / "celerybeat-schedule")]
        return [PYTHON, "-m", "gunicorn", "mailhost.asgi:application", "--worker-class",
                "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{self.ports['web']}",
                "--workers", "1"]

    def start(self, name: str, *, wait: bool = True) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.processes[name] = subprocess.Popen(
            self.command(name), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        if name == "mail" and wait:
            for port in ("smtp", "submission", "imap", "pop3"):
                self.wait_for(name, port)

    def wait_for(self, name: str, port: str) -> None:
        process = self.processes[name]
        try:
            wait_for_port(self.ports[port], name, lambda: process.poll() is None, timeout=60)
        except RuntimeError:
            raise RuntimeError(f"{name} did not start:\n{self.tail(name)}") from None

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group, as a crash would."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        # They stop side by side: one deadline for all, then SIGKILL (the
        # accounting needs them gone, not gone gracefully).
        deadline = time.monotonic() + 10
        for name, process in self.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)

    def ensure_running(self) -> None:
        for name in self.NAMES:
            if self.processes[name].poll() is not None:
                self.start(name)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# --- the ledger and the load ---------------------------------------------------------------


@dataclass
class Sent:
    token: str
    kind: str  # inbound, alias, quota, forward, bounce-forward, submit-ok/temp/perm, imap, pop
    mailboxes: tuple[str, ...] = ()
    acked: bool = False
    moved: bool | None = None  # IMAP: None not tried, True answered OK, False unknown
    expunged: bool | None = None
    popped: bool | None = None  # POP3: True deleted (QUIT +OK), False retrieved, maybe deleted


@dataclass
class Ledger:
    sent: dict[str, Sent] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)

    def new(self, kind: str, mailboxes: tuple[str, ...] = ()) -> Sent:
        with self.lock:
            self.counter += 1
            entry = Sent(f"CHAOS-{kind.split('-')[-1]}-{self.counter}", kind, mailboxes)
            self.sent[entry.token] = entry
            return entry

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] += 1


def message(sender: str, recipient: str, token: str, size: int) -> bytes:
    head = (f"From: {sender}\r\nTo: {recipient}\r\nSubject: chaos {token}\r\n"
            f"Message-ID: <{token}@chaos.test>\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\n")
    line = f"{token} the quick brown fox jumps over the lazy dog\r\n"
    return (head + line * max(1, size // len(line))).encode()


def user(n: int) -> str:
    return f"user{n}@{DOMAIN}"


def inbound_load(port: int, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    """Mail from outside, one or a few messages per connection."""
    targets = [
        ("inbound", f"user1@{DOMAIN}", (user(1),)),
        ("inbound", f"user2@{DOMAIN}", (user(2),)),
        ("pop", f"user3@{DOMAIN}", (user(3),)),
        ("alias", f"team@{DOMAIN}", (user(1), user(2))),
        ("quota", f"full@{DOMAIN}", (f"full@{DOMAIN}",)),
        ("forward", f"fwd@{DOMAIN}", ()),
        ("bounceforward", f"fwdgone@{DOMAIN}", ()),
    ]
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
                for _ in range(rng.randint(1, 4)):
                    if stop.is_set():  # the rounds are over: no new transaction
                        break
                    kind, rcpt, boxes = rng.choice(targets)
                    entry = ledger.new(kind, boxes)
                    sender = f"sender-{entry.token.lower()}@client.example"
                    try:
                        smtp.sendmail(sender, [rcpt], message(sender, rcpt, entry.token,
                                                              rng.randint(500, 6000)))
                        entry.acked = True
                    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError,
                            smtplib.SMTPSenderRefused) as refused:
                        ledger.error(f"inbound refused {str(refused)[:40]}")
                        smtp.rset()
        except (OSError, smtplib.SMTPException):
            ledger.error("inbound connection")
            time.sleep(0.2)


def submission_load(port: int, ledger: Ledger, stop: threading.Event,
                    rng: random.Random) -> None:
    sender = user(1)
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
                smtp.login(sender, PASSWORD)
                for _ in range(rng.randint(1, 4)):
                    if stop.is_set():
                        break
                    kind = rng.choices(["submit-ok", "submit-temp", "submit-perm"],
                                       [6, 2, 1])[0]
                    entry = ledger.new(kind)
                    rcpt = f"{kind.split('-')[1]}-{entry.token.lower()}@{REMOTE}"
                    try:
                        smtp.sendmail(sender, [rcpt],
                                      message(sender, rcpt, entry.token, rng.randint(500, 6000)))
                        entry.acked = True
                    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as refused:
                        ledger.error(f"submission refused {str(refused)[:40]}")
                        smtp.rset()
        except (OSError, smtplib.SMTPException):
            ledger.error("submission connection")
            time.sleep(0.2)


def imap_load(port: int, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    """APPEND into Work; then MOVE to Archive, or STORE \\Deleted and EXPUNGE."""
    login = user(2)
    while not stop.is_set():
        try:
            client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
            client.login(login, PASSWORD)
            for name in ("Work", "Archive"):
                client.create(name)  # NO when it exists
            while not stop.is_set():
                entry = ledger.new("imap", (login,))
                data = message(login, login, entry.token, rng.randint(300, 3000))
                status, _ = client.append("Work", None, None, data)
                if status != "OK":
                    ledger.error("imap append NO")
                    continue
                entry.acked = True
                action = rng.random()
                if action < 0.4:
                    continue
                client.select("Work")
                status, data = client.uid("SEARCH", "HEADER", "Subject", entry.token)
                uids = data[0].split() if status == "OK" and data and data[0] else []
                if len(uids) != 1:
                    ledger.error(f"imap search found {len(uids)}")
                    continue
                if action < 0.7:
                    entry.moved = False
                    status, _ = client.uid("MOVE", uids[0].decode(), "Archive")
                    entry.moved = status == "OK"
                else:
                    entry.expunged = False
                    client.uid("STORE", uids[0].decode(), "+FLAGS.SILENT", r"(\Deleted)")
                    status, _ = client.expunge()
                    entry.expunged = status == "OK"
                client.unselect()
            client.logout()
        except (OSError, imaplib.IMAP4.error, EOFError):
            ledger.error("imap connection")
            time.sleep(0.2)


def pop3_load(port: int, ledger: Ledger, stop: threading.Event) -> None:
    """Every second: RETR and DELE all of user3's maildrop, then QUIT."""
    while not stop.wait(1.0):
        retrieved: list[Sent] = []
        client: poplib.POP3 | None = None
        try:
            client = poplib.POP3("127.0.0.1", port, timeout=20)
            client.user(user(3))
            client.pass_(PASSWORD)
            count, _ = client.stat()
            for number in range(1, min(count, 30) + 1):
                _, lines, _ = client.retr(number)
                token = token_of(b"\r\n".join(lines))
                entry = ledger.sent.get(token or "")
                if entry is not None:
                    entry.popped = False if entry.popped is None else entry.popped
                    retrieved.append(entry)
                client.dele(number)
            client.quit()
            for entry in retrieved:
                entry.popped = True
        except (OSError, poplib.error_proto, EOFError) as error:
            ledger.error(f"pop3 {str(error)[:30]}")
            if client is not None:
                client.close()  # no QUIT: the session ends without UPDATE


def web_load(port: int, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        except OSError:
            ledger.error("web request")


# --- the tally ---------------------------------------------------------------------------


@dataclass
class Tally:
    rounds: int = 0
    kills: collections.Counter = field(default_factory=collections.Counter)
    kill_times: list[tuple[float, str]] = field(default_factory=list)
    acknowledged: collections.Counter = field(default_factory=collections.Counter)
    unacknowledged: int = 0
    placed: collections.Counter = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    outbound_duplicates: int = 0
    unexplained_duplicates: list[str] = field(default_factory=list)
    stuck_queue: int = 0
    stuck_spool: int = 0
    orphan_files: int = 0
    unreferenced_rows: int = 0
    missing_files: int = 0
    collected: int = 0
    left_by_kills: int = 0  # files no row names, before the collector ran
    client_errors: collections.Counter = field(default_factory=collections.Counter)

    @property
    def faults(self) -> int:
        return (len(self.lost) + len(self.duplicated) + len(self.misplaced)
                + len(self.unexplained_duplicates) + self.stuck_queue
                + self.stuck_spool + self.orphan_files + self.unreferenced_rows
                + self.missing_files)

    def report(self, title: str) -> str:
        lines = [title,
                 f"  rounds {self.rounds}, kills {dict(sorted(self.kills.items()))}",
                 f"  acknowledged {sum(self.acknowledged.values())} "
                 f"{dict(sorted(self.acknowledged.items()))}, unacknowledged attempts "
                 f"{self.unacknowledged}",
                 f"  placed {dict(sorted(self.placed.items()))}",
                 f"  outbound duplicates at the sink (kill between remote 250 and commit): "
                 f"{self.outbound_duplicates}, without such a kill "
                 f"{len(self.unexplained_duplicates)}",
                 f"  lost {len(self.lost)}, duplicated in a mailbox {len(self.duplicated)}, "
                 f"misplaced {len(self.misplaced)}",
                 f"  stuck queue entries {self.stuck_queue}, stuck spool rows {self.stuck_spool}",
                 f"  files left by kills without a row {self.left_by_kills}; blobs "
                 f"collected {self.collected}; after collection: orphan files "
                 f"{self.orphan_files}, unreferenced rows {self.unreferenced_rows}, rows "
                 f"without file {self.missing_files}",
                 f"  client-side errors {dict(self.client_errors.most_common(8))}"]
        for name, items in (("lost", self.lost), ("duplicated", self.duplicated),
                            ("misplaced", self.misplaced),
                            ("sent twice without a worker kill", self.unexplained_duplicates)):
            lines += [f"    {name}: {item}" for item in items[:10]]
        return "\n".join(lines)


def account(ledger: Ledger, sink: Sink, tally: Tally) -> None:
    """Compare what was sent with what the store and the sink hold."""
    from apps.store.blobs import get_blob_store
    from apps.store.models import Message

    store = get_blob_store()
    # token -> Counter of (mailbox, folder) holding the message itself; and DSNs.
    copies: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    dsns: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for address, folder, sha in Message.objects.values_list(
            "folder__mailbox__address", "folder__name", "blob_id"):
        data = store.read(sha)
        own = token_of(data)
        if own:
            copies[own][(address, folder)] += 1
        else:
            for token in tokens_in(data):
                dsns[token][address] += 1
    at_sink: collections.Counter = collections.Counter()
    sink_times: dict[str, list[float]] = collections.defaultdict(list)
    sink_dsns: collections.Counter = collections.Counter()
    for when, sender, _rcpts, data in sink.received:
        own = token_of(data)
        if own and sender:
            at_sink[own] += 1
            sink_times[own].append(when)
        else:
            for token in tokens_in(data):
                sink_dsns[token] += 1

    for token, entry in ledger.sent.items():
        held = copies.get(token, collections.Counter())
        per_mailbox = collections.Counter()
        for (address, _folder), n in held.items():
            per_mailbox[address] += n
        if any(n > 1 for n in per_mailbox.values()):
            tally.duplicated.append(f"{token} {entry.kind} {dict(held)}")
            continue
        if not entry.acked:
            tally.unacknowledged += 1
            continue
        tally.acknowledged[entry.kind] += 1
        kind = entry.kind
        if kind in ("inbound", "alias", "pop"):
            # POP3: after QUIT's +OK the message is gone; retrieved and marked
            # in a session cut short, it may be either (the QUIT may have
            # committed before the kill, its +OK lost).
            expected = set() if entry.popped is not None else set(entry.mailboxes)
            optional = set(entry.mailboxes) if entry.popped is False else set()
            present = set(per_mailbox)
            if present - expected - optional or expected - present:
                tally.lost.append(f"{token} {kind} expected {sorted(expected)} held {dict(held)}"
                                  f" popped {entry.popped}")
            elif any(folder not in ("INBOX", "Junk") for (_a, folder) in held):
                tally.misplaced.append(f"{token} {kind} {dict(held)}")
            else:
                tally.placed["popped" if not present else "mailbox"] += 1
        elif kind == "quota":
            if per_mailbox or sink_dsns[token]:
                tally.placed["mailbox" if per_mailbox else "bounced"] += 1
            else:
                tally.lost.append(f"{token} quota: neither filed nor bounced")
        elif kind in ("forward", "submit-ok", "submit-temp"):
            if at_sink[token]:
                tally.placed["sink"] += 1
                tally.outbound_duplicates += at_sink[token] - 1
                first, last = min(sink_times[token]), max(sink_times[token])
                # RFC 5321 §6.1 allows a duplicate only where the sender cannot
                # know the first copy arrived: a worker killed between the remote
                # 250 and the commit of that outcome.
                if at_sink[token] > 1 and not any(
                        first <= when <= last and name.startswith("worker")
                        for when, name in tally.kill_times):
                    tally.unexplained_duplicates.append(f"{token} {kind} x{at_sink[token]}")
            else:
                tally.lost.append(f"{token} {kind}: not at the sink "
                                  f"(bounces: {sink_dsns[token] + sum(dsns[token].values())})")
        elif kind == "bounceforward":
            if sink_dsns[token] >= 1:
                tally.placed["bounced"] += 1
            else:
                tally.lost.append(f"{token} forwarded to a refusing address: no bounce")
        elif kind == "submit-perm":
            bounced = dsns[token][user(1)]
            if bounced == 1:
                tally.placed["bounced"] += 1
            elif bounced > 1:
                tally.duplicated.append(f"{token} bounce filed {bounced} times")
            else:
                tally.lost.append(f"{token} refused remotely: no bounce in {user(1)}")
        elif kind == "imap":
            folders = {folder for (_a, folder) in held}
            if entry.expunged:
                if held:
                    tally.misplaced.append(f"{token} expunged but still {dict(held)}")
                else:
                    tally.placed["expunged"] += 1
            elif entry.expunged is False:
                tally.placed["expunged" if not held else "mailbox"] += 1
            elif not held:
                tally.lost.append(f"{token} appended, not found")
            elif entry.moved and folders != {"Archive"}:
                tally.misplaced.append(f"{token} moved to Archive, held {dict(held)}")
            elif entry.moved is None and folders != {"Work"}:
                tally.misplaced.append(f"{token} appended to Work, held {dict(held)}")
            else:
                tally.placed["mailbox"] += 1
    tally.client_errors = ledger.errors


def check_storage(tally: Tally) -> None:
    """After the collector: every file has its row, every row is referenced and
    has its file."""
    from apps.store import services
    from apps.store.blobs import LocalBlobStore, get_blob_store
    from apps.store.models import Blob

    store = get_blob_store()

    def files_without_rows() -> int:
        files = set(store.files_older_than(-1))
        rows = set(Blob.objects.values_list("pk", flat=True))
        # The S3 store's single PUTs leave no temporaries behind.
        temporaries = (sum(1 for _ in os.scandir(store.tmp))
                       if isinstance(store, LocalBlobStore) else 0)
        return len(files - rows) + temporaries

    tally.left_by_kills = files_without_rows()
    tally.collected = services.collect_garbage(0)
    files = set(store.files_older_than(-1))
    rows = set(Blob.objects.values_list("pk", flat=True))
    tally.orphan_files = files_without_rows()
    tally.missing_files = len(rows - files)
    tally.unreferenced_rows = services._unreferenced_blobs().count()


def wait_for_drain(platform: Platform, timeout: float) -> tuple[int, int]:
    """Wait until the outbound queue and the inbound spool are empty (entries
    still waiting for a retry or an expired claim are waited for); what is
    left after ``timeout``."""
    from apps.antispam.models import SpooledMessage
    from apps.delivery.models import QueueEntry

    deadline = time.monotonic() + timeout
    while True:
        platform.ensure_running()
        queued, spooled = QueueEntry.objects.count(), SpooledMessage.objects.count()
        if (not queued and not spooled) or time.monotonic() > deadline:
            return queued, spooled
        time.sleep(0.5)


# --- the run ---------------------------------------------------------------------------------


def provision() -> None:
    from apps.directory import services

    services.create_domain(DOMAIN)
    for n in (1, 2, 3):
        services.create_mailbox(user(n), PASSWORD, quota=0)
    services.create_mailbox(f"full@{DOMAIN}", PASSWORD, quota=QUOTA)
    services.create_alias(f"team@{DOMAIN}", [user(1), user(2)])
    services.create_alias(f"fwd@{DOMAIN}", [f"forwarded@{REMOTE}"])
    services.create_alias(f"fwdgone@{DOMAIN}", [f"perm-gone@{REMOTE}"])


def run(*, rounds: int, interval: float, env: dict[str, str], data_dir: Path,
        drain_timeout: float = 120, seed: int = 1,
        log: Callable[[str], None] = print) -> Tally:
    """The chaos rounds against the database and store the current Django
    settings name (``env`` carries them to the platform's processes)."""
    rng = random.Random(seed)
    sink = Sink(seed)
    env = dict(env)
    env.update(TIMINGS)
    env.update({
        "MAILHOST_TRANSPORTS": f"*=127.0.0.1:{sink.port};tls=none",
        "MAILHOST_HOSTNAME": f"mail.{DOMAIN}",
        "MAILHOST_ANTISPAM_INLINE": "0",
        "MAILHOST_DNS_RESOLVER": "tests.fakedns.FakeResolver",
        "MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR": "1000000",
        "MAILHOST_FAST_PASSWORD_HASHER": "1",
        "MAILHOST_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    provision()
    platform = Platform(env, data_dir)
    tally = Tally()
    ledger = Ledger()
    stop = threading.Event()
    try:
        started = time.monotonic()
        for name in Platform.NAMES:
            platform.start(name, wait=False)  # side by side: each imports Django
        for port in ("smtp", "submission", "imap", "pop3"):
            platform.wait_for("mail", port)
        platform.wait_for("web", "web")
        log(f"platform up in {time.monotonic() - started:.1f} s")
        ports = platform.ports
        threads = [
            threading.Thread(target=inbound_load, args=(ports["smtp"], ledger, stop,
                                                        random.Random(seed + n)))
            for n in range(3)]
        threads += [
            threading.Thread(target=submission_load,
                             args=(ports["submission"], ledger, stop, random.Random(seed + 10))),
            threading.Thread(target=imap_load,
                             args=(ports["imap"], ledger, stop, random.Random(seed + 20))),
            threading.Thread(target=pop3_load, args=(ports["pop3"], ledger, stop)),
            threading.Thread(target=web_load, args=(ports["web"], ledger, stop)),
        ]
        for thread in threads:
            thread.start()
        # Each process is killed once in the first rounds, then at random.
        victims = rng.sample(Platform.NAMES, len(Platform.NAMES))
        for round_number in range(1, rounds + 1):
            time.sleep(rng.uniform(interval / 2, interval * 1.5))
            victim = victims.pop(0) if victims else rng.choice(Platform.NAMES)
            platform.kill(victim)
            tally.kills[victim] += 1
            tally.kill_times.append((time.monotonic(), victim))
            platform.start(victim)
            tally.rounds = round_number
            log(f"round {round_number}: killed and restarted {victim}; "
                f"{len(ledger.sent)} messages sent so far")
        stop.set()
        for thread in threads:
            thread.join(60)
        started = time.monotonic()
        tally.stuck_queue, tally.stuck_spool = wait_for_drain(platform, drain_timeout)
        log(f"queue and spool drained in {time.monotonic() - started:.1f} s")
        if tally.stuck_queue or tally.stuck_spool:
            log(platform.tail("worker1") + "\n" + platform.tail("worker2"))
    finally:
        stop.set()
        platform.stop_all()
        sink.stop()
    check_storage(tally)
    account(ledger, sink, tally)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="mailhost-chaos-"))
    env = dict(os.environ, MAILHOST_DATA_DIR=str(data_dir), MAILHOST_CACHE_PREFIX="mh-chaos",
               DJANGO_SETTINGS_MODULE="mailhost.settings", MAILHOST_LOG_LEVEL="WARNING")
    subprocess.run([PYTHON, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env,
                   check=True)
    if env.get("DATABASE_URL"):
        subprocess.run([PYTHON, "manage.py", "flush", "--no-input"], cwd=ROOT, env=env,
                       check=True)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if env.get("REDIS_URL"):
        from django.core.cache import cache

        from mailhost.celery import app

        cache.clear()
        app.control.purge()
    started = time.monotonic()
    try:
        tally = run(rounds=args.rounds, interval=args.interval, env=env, data_dir=data_dir,
                    seed=args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    database = "PostgreSQL" if env.get("DATABASE_URL") else "SQLite"
    broker = "Redis" if env.get("REDIS_URL") else "filesystem broker"
    print(tally.report(f"chaos: {database}, {broker}, {time.monotonic() - started:.0f} s, "
                       f"load average {os.getloadavg()[0]:.1f}"))
    sys.exit(1 if tally.faults else 0)


if __name__ == "__main__":
    main()
