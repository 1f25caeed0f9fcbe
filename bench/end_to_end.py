"""End to end: accepted over SMTP → checked → filed in INBOX → visible over IMAP.

Mailhost runs as the Procfile runs it (``runmailservers`` for SMTP and IMAP, one
Celery worker with beat inside, concurrency 2), with every inbound check on
(SPF, DKIM, DMARC, the classifier; DNS answered from the tests' empty table,
so that nothing leaves the machine). The reference, in the same run, is
Debian's Postfix delivering over LMTP into Dovecot, each with a throwaway
configuration on 127.0.0.1. Postfix's ``smtp-source`` sends the same N
messages of about 10 KiB to each (20 sessions, one message per connection);
the clock runs from the first send until IMAP STATUS INBOX counts the last
message. The message is a 10 KB ham message of tests/corpus, and Mailhost's
classifier is trained on tests/corpus first, so that it looks its tokens up
as a deployed one does. Prints messages/s for each and their ratio, the CPU
milliseconds per message of Mailhost's listener and worker processes (the
steadier figure on a shared machine), and the load average.

    .venv/bin/python bench/end_to_end.py --messages 1000
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_bench REDIS_URL=redis://127.0.0.1:6379/4 \\
        .venv/bin/python bench/end_to_end.py    # the database is emptied first
"""

from __future__ import annotations

import argparse
import imaplib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PYTHON,
    Background,
    MailhostInstance,
    dovecot_imap_users_and_services,
    free_port,
    load_average,
    tree_cpu_seconds,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
SAMPLE = CORPUS / "ham" / "easy_ham.00558.95b8c2677759a2f569a5dc0bd70b8cc0"
USER = "bench@bench.example"
PASSWORD = "bench password 1"
SENDER = "load@client.example"



def ensure_packages() -> None:
    missing = [package for binary, package in (
        ("/usr/sbin/postfix", "postfix"), ("/usr/lib/dovecot/lmtp", "dovecot-lmtpd"),
        ("/usr/lib/dovecot/imap", "dovecot-imapd")) if not Path(binary).exists()]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "-qq",
                        "--no-install-recommends", *missing], check=True, env=env)
        for service in ("postfix", "dovecot"):
            subprocess.run(["service", service, "stop"], check=False, capture_output=True)


# --- the reference: Postfix → LMTP → Dovecot ---------------------------------------------


class Dovecot:
    """Dovecot serving LMTP and IMAP for one Maildir user."""

    def __init__(self, base: Path) -> None:
        mail = base / "mail"
        for sub in ("cur", "new", "tmp"):
            (mail / sub).mkdir(parents=True)
        subprocess.run(["chown", "-R", "mail:mail", str(mail)], check=True)
        (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:8:8::{mail}::\n")
        self.imap_port, self.lmtp_port = free_port(), free_port()
        (base / "dovecot.conf").write_text(f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 8
mail_location = maildir:{mail}
default_login_user = dovenull
default_internal_user = dovecot
postmaster_address = postmaster@bench.example
{dovecot_imap_users_and_services(base, self.imap_port)}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
""")
        self.process = Background(["dovecot", "-F", "-c", str(base / "dovecot.conf")])
        alive = lambda: self.process.process.poll() is None  # noqa: E731
        wait_for_port(self.imap_port, "dovecot", alive)
        wait_for_port(self.lmtp_port, "dovecot lmtp", alive)

    def stop(self) -> None:
        self.process.stop()


class Postfix:
    """A Postfix instance of its own (queue, configuration, log under ``base``)
    listening on 127.0.0.1 and relaying the bench domain over LMTP."""

    def __init__(self, base: Path, lmtp_port: int) -> None:
        self.config = base / "etc"
        self.config.mkdir()
        self.port = free_port()
        (self.config / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file = {base}/postfix.log
maillog_file_prefixes = {base}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = reference.bench.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = bench.example
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
""")
        # The system's services, not chrooted (the chroot would need a copy
        # of /etc), with smtpd on our own port.
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line[:1] not in ("#", " ", "\t", "") and len(fields) >= 8:
                if fields[:2] == ["smtp", "inet"]:
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"
                line = " ".join(fields)
            lines.append(line)
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")
        self.log = base / "postfix.log"
        (base / "queue").mkdir()
        self.postfix("set-permissions")
        self.postfix("start")
        wait_for_port(self.port, "postfix", lambda: True)

    def postfix(self, command: str) -> None:
        # Postfix reports its errors to syslog or its own log, not to stderr.
        if subprocess.run(["postfix", "-c", str(self.config), command],
                          capture_output=True).returncode:
            log = self.log.read_text() if self.log.exists() else "(no log)"
            raise RuntimeError(f"postfix {command} failed:\n{log[-3000:]}")

    def stop(self) -> None:
        self.postfix("stop")


# --- Mailhost -------------------------------------------------------------------------


class Mailhost:
    """Listeners and a worker as the Procfile starts them."""

    def __init__(self) -> None:
        self.instance = MailhostInstance(os.environ.get("DATABASE_URL"))
        # DATABASE_URL names a throwaway database: emptied, as a new instance's is.
        self.instance.manage("flush", "--no-input")
        self.instance.env["MAILHOST_DNS_RESOLVER"] = "tests.fakedns.FakeResolver"
        self.instance.manage("createdomain", USER.split("@")[1])
        self.instance.manage("createmailbox", USER, "--password-stdin", "--quota", "0",
                             stdin=PASSWORD + "\n")
        self.instance.manage("trainspam", "--spam", str(CORPUS / "spam"),
                             "--ham", str(CORPUS / "ham"))
        self.start()

    def start(self) -> None:
        self.listeners, ports = self.instance.start_listeners("smtp,imap")
        self.port, self.imap_port = ports["smtp"], ports["imap"]
        self.start_worker()

    def start_worker(self) -> None:
        data = self.instance.tmp.name
        self.worker = Background(
            [PYTHON, "-m", "celery", "-A", "mailhost", "worker", "--beat", "--loglevel",
             "INFO", "--concurrency", "2", "--schedule", f"{data}/celerybeat-schedule"],
            self.instance.env)
        self.worker.wait_for(r"ready\.")

    def leftovers(self, count: int, message: Path, timeout: float) -> float:
        """Seconds from a restart until ``count`` messages, spooled (250 sent)
        by a listener that was then SIGKILLed while no worker ran, are visible."""
        self.worker.stop()
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=60)
        client.login(USER, PASSWORD)
        before = inbox_count(client)
        client.logout()
        subprocess.run(["smtp-source", "-s", "20", "-m", str(count), "-F", str(message),
                        "-f", SENDER, "-t", USER, f"127.0.0.1:{self.port}"],
                       check=True, timeout=timeout, capture_output=True)
        self.listeners.process.kill()
        self.listeners.process.wait()
        started = time.perf_counter()
        self.start()
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=60)
        client.login(USER, PASSWORD)
        while inbox_count(client) - before < count:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"leftovers: {inbox_count(client) - before} of {count}")
            time.sleep(0.02)
        client.logout()
        return time.perf_counter() - started

    def stop(self) -> None:
        self.worker.stop()
        self.listeners.stop()
        self.instance.cleanup()


# --- the load and the clock -------------------------------------------------------------


def inbox_count(client: imaplib.IMAP4) -> int:
    status, data = client.status("INBOX", "(MESSAGES)")
    if status != "OK":
        raise RuntimeError(data)
    return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))  # type: ignore[union-attr]


def message_file(directory: Path) -> Path:
    """The sample as smtp-source -F sends it: header and body, LF line ends."""
    data = SAMPLE.read_bytes()
    if data.startswith(b"From "):  # the mbox separator
        data = data.split(b"\n", 1)[1]
    path = directory / "message.txt"
    path.write_bytes(data.replace(b"\r\n", b"\n"))
    return path


def run_load(smtp_port: int, imap_port: int, messages: int, message: Path, sessions: int,
             timeout: float) -> tuple[float, float]:
    """(messages/s accepted over SMTP, messages/s until visible in INBOX)."""
    client = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
    client.login(USER, PASSWORD)
    before = inbox_count(client)
    started = time.perf_counter()
    source = subprocess.Popen(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(message),
         "-f", SENDER, "-t", USER, f"127.0.0.1:{smtp_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    accepted = 0.0
    while (seen := inbox_count(client) - before) < messages:
        if not accepted and source.poll() is not None:
            accepted = time.perf_counter()
            if source.returncode:
                raise RuntimeError(f"smtp-source failed: {source.stdout.read()!r}")  # type: ignore[union-attr]
        if time.perf_counter() - started > timeout:
            source.kill()
            junk = client.status("Junk", "(MESSAGES)")[1][0]
            raise TimeoutError(f"{seen} of {messages} visible after {timeout:.0f}s "
                               f"(Junk: {junk!r})")
        time.sleep(0.02)
    finished = time.perf_counter()
    source.wait(timeout)
    accepted = accepted or time.perf_counter()
    client.logout()
    return messages / (accepted - started), messages / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=150, help="per server, seconds")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--leftovers", type=int, default=100,
                        help="messages left spooled by a killed listener (0: skip)")
    args = parser.parse_args()
    ensure_packages()
    scratch = tempfile.TemporaryDirectory(prefix="e2e-message-")
    message = message_file(Path(scratch.name))
    message_size = message.stat().st_size

    def load(smtp_port: int, imap_port: int, warmup: int = 20) -> tuple[float, float]:
        run_load(smtp_port, imap_port, warmup, message, 2, args.timeout)
        return run_load(smtp_port, imap_port, args.messages, message, args.sessions,
                        args.timeout)

    load_before = load_average()
    mailhost = Mailhost()
    try:
        pids = {"listener": mailhost.listeners.process.pid,
                "worker": mailhost.worker.process.pid}
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        results = {"Mailhost": load(mailhost.port, mailhost.imap_port)}
        # The warm-up's 20 messages are in the CPU time too.
        cpu_ms = {name: 1000 * (tree_cpu_seconds(pid) - cpu_before[name])
                  / (args.messages + 20) for name, pid in pids.items()}
        if args.leftovers:
            leftover_seconds = mailhost.leftovers(args.leftovers, message, args.timeout)
    except BaseException:
        print("".join(mailhost.worker.lines[-40:]), file=sys.stderr)
        raise
    finally:
        mailhost.stop()
    if not args.skip_reference:
        base = Path(tempfile.mkdtemp(prefix="e2e-reference-"))
        os.chmod(base, 0o755)  # noqa: S103 (Dovecot's mail processes run as "mail")
        dovecot = postfix = None
        try:
            dovecot = Dovecot(base)
            postfix = Postfix(base, dovecot.lmtp_port)
            results["Postfix → Dovecot LMTP"] = load(postfix.port, dovecot.imap_port)
        finally:
            if postfix:
                postfix.stop()
            if dovecot:
                dovecot.stop()
            shutil.rmtree(base, ignore_errors=True)

    broker = "Redis" if os.environ.get("REDIS_URL") else "filesystem broker"
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    scratch.cleanup()
    print(f"end_to_end: {args.messages} messages of {message_size} B, smtp-source "
          f"{args.sessions} sessions × 1 message, until visible in INBOX over IMAP "
          f"(Mailhost on {database}, {broker})")
    print(f"  load average before {load_before}, after {load_average()}")
    print(f"  Mailhost CPU ms per message: listener {cpu_ms['listener']:.2f}, "
          f"worker {cpu_ms['worker']:.2f}")
    print(f"  {'path':<36}{'filed msg/s':>12}{'accepted msg/s':>16}")
    for name, (accepted, filed) in results.items():
        print(f"  {name:<36}{filed:>12.0f}{accepted:>16.0f}")
    if args.leftovers:
        print(f"  {args.leftovers} messages spooled by a listener SIGKILLed while no worker "
              f"ran: all visible {leftover_seconds:.1f} s after the restart of listener "
              "and worker")
    if len(results) == 2:
        (_, mailhost_rate), (_, reference) = results.values()
        print(f"  ratio Mailhost/reference (filed): {mailhost_rate / reference:.3f}")


if __name__ == "__main__":
    main()
