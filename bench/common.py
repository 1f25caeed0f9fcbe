"""Helpers shared by the benchmarks: processes, their peak memory, a Mailhost
instance of its own in a temporary data directory."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The shared mail corpora beside the checkout (ham/, spam/, mime/); --corpus
# names another copy.
CORPORA = ROOT.parent / "shared" / "corpora"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.antispam.corpus import message_from_file_bytes  # noqa: E402


def dovecot_imap_users_and_services(base: Path, imap_port: int) -> str:
    """The part of a throwaway dovecot.conf the IMAP benchmarks share: users
    from ``base``/passwd, IMAP on 127.0.0.1:``imap_port``, no other listener."""
    return f"""passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {base}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}"""


def add_corpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=CORPORA,
                        help="the mail corpora: a folder with ham/ and spam/ "
                             "(default: ../shared/corpora beside the checkout)")


def corpus_messages(paths: list[Path]) -> list[bytes]:
    """The files as they would arrive over SMTP: no mbox 'From ' line, CRLF."""
    return [message_from_file_bytes(path.read_bytes()) for path in paths]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server to bind."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, what: str, alive: Callable[[], bool], timeout: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; gives up when
    ``alive()`` turns false (the server died) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or not alive():
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux)."""
    tree = [pid]
    for member in tree:
        path = Path(f"/proc/{member}/task/{member}/children")
        if path.exists():
            tree += [int(child) for child in path.read_text().split()]
    return tree


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """A process with its children: the sum of their peak RSS (pages shared
    after fork are counted in each), and the sum of their PSS now (shared
    pages divided among the sharers: what the tree really occupies)."""
    peak = pss = 0.0
    for member in process_tree(pid):
        peak += peak_rss_mib(member)
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) / 1024
    return peak, pss


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its live descendants
    (Linux): CPU per message is what a shared, loaded machine still measures
    fairly, where rates are noisy."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:  # gone meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(database_url: str) -> float:
    """CPU time (user + system) of this machine's PostgreSQL backends serving
    the database of ``database_url`` (their process titles name it): the
    server's share of the work that a listener's own CPU time leaves out."""
    database = urlsplit(database_url).path.lstrip("/")
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: ") or f" {database} " not in title:
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to print beside every figure."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


class Background:
    """A subprocess whose output is drained; ``wait_for`` finds a line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError(f"{pattern!r} not seen:\n" + "".join(self.lines[-30:]))
                self._cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class MailhostInstance:
    """A throwaway Mailhost: its own data directory (or DATABASE_URL), migrated."""

    def __init__(self, database_url: str | None = None, *,
                 seed: Callable[[Path], None] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mailhost-bench-")
        self.env = dict(os.environ)
        self.env.update({"MAILHOST_DATA_DIR": self.tmp.name, "MAILHOST_LOG_LEVEL": "WARNING",
                         "MAILHOST_FAST_PASSWORD_HASHER": "1"})
        if database_url:
            self.env["DATABASE_URL"] = database_url
        if seed is not None:  # a data directory (and database) built before
            seed(Path(self.tmp.name))
        self.manage("migrate", "--no-input", "-v0")

    def manage(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, input=stdin,
                              text=True, check=True, capture_output=True).stdout

    def start_listeners(self, names: str) -> tuple[Background, dict[str, int]]:
        env = dict(self.env, MAILHOST_LOG_LEVEL="INFO")
        for name in names.split(","):
            env[f"{name.upper()}_PORT"] = "0"
        process = Background([PYTHON, "manage.py", "runmailservers", "--only", names], env)
        ports = {}
        for name in names.split(","):
            match = process.wait_for(rf"listening name={name} address=\S+ port=(\d+)")
            ports[name] = int(match.group(1))
        return process, ports

    def cleanup(self) -> None:
        self.tmp.cleanup()


def write_maildir_folder(mail: Path, folder: str, messages: Iterable[bytes]) -> None:
    """A folder of a Maildir++ as Dovecot reads it: INBOX is the root, other
    folders are ".Name"; the messages in cur/, none seen."""
    target = mail if folder == "INBOX" else mail / f".{folder}"
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(messages):
        (target / "cur" / f"{1700000000 + index}.{index}.bench:2,").write_bytes(data)


class Dovecot:
    """Debian's Dovecot (dovecot-imapd) with a throwaway configuration: IMAP on
    127.0.0.1 and a free port, a Maildir per user under a temporary directory,
    the first user's filled with ``folders`` (the IMAP benchmarks and the
    import tests use it)."""

    name = "Dovecot"

    def __init__(self, folders: dict[str, list[bytes]], connections: int, *, user: str,
                 password: str, extra_users: Sequence[str] = (),
                 maildir: Path | None = None, settings: str = "") -> None:
        """``maildir``: the first user's Maildir built before (hard-linked in:
        Dovecot renames message files, never rewrites them), instead of
        ``folders``. ``settings``: more lines of dovecot.conf."""
        if shutil.which("dovecot") is None or not Path("/usr/lib/dovecot/imap").exists():
            subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "-qq",
                            "--no-install-recommends", "dovecot-imapd"], check=True)
            subprocess.run(["service", "dovecot", "stop"], check=False,
                           capture_output=True)
        self.tmp = tempfile.TemporaryDirectory(prefix="dovecot-bench-")
        base = Path(self.tmp.name)
        # Dovecot's mail processes run as the "mail" user and must reach the Maildir.
        os.chmod(base, 0o755)  # noqa: S103
        self.base = base
        # One Maildir per user: the first holds the folders, the rest start empty.
        mail = self.mail_dir(user)
        for extra in extra_users:
            for sub in ("cur", "new", "tmp"):
                (self.mail_dir(extra) / sub).mkdir(parents=True, exist_ok=True)
        if maildir is not None:
            mail.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(maildir), str(mail)], check=True)
        for folder, messages in folders.items():
            write_maildir_folder(mail, folder, messages)
        (mail / "tmp").mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "mail:mail", str(base / "mail")], check=True)
        (base / "passwd").write_text("".join(
            f"{name}:{{PLAIN}}{password}:8:8::{self.mail_dir(name)}::\n"
            for name in (user, *extra_users)))
        self.port = free_port()
        (base / "dovecot.conf").write_text(f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 8
mail_location = maildir:~
default_login_user = dovenull
default_internal_user = dovecot
default_client_limit = {connections + 100}
default_process_limit = {connections + 100}
protocol imap {{
  mail_max_userip_connections = {connections + 10}
}}
{dovecot_imap_users_and_services(base, self.port)}
{settings}
""")
        self.process = Background(["dovecot", "-F", "-c", str(base / "dovecot.conf")])
        try:
            wait_for_port(self.port, "dovecot", lambda: self.process.process.poll() is None)
        except RuntimeError:
            log = base / "dovecot.log"
            raise RuntimeError("dovecot did not start:\n" + "".join(self.process.lines)
                               + (log.read_text() if log.exists() else "")) from None
        self.pid = self.process.process.pid

    def mail_dir(self, user: str) -> Path:
        return self.base / "mail" / user

    def stop(self) -> None:
        self.process.stop()
        self.tmp.cleanup()
