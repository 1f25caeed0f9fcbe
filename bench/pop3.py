"""POP3 RETR throughput: Mailhost beside Dovecot's POP3 server, in one run.

Both serve the same 1,000 real messages of mixed size (ham and spam corpus)
from one mailbox to one client on 127.0.0.1 that logs in, asks for STAT and
RETRs every message, with a window of pipelined RETRs (RFC 2449 PIPELINING,
which both servers announce). Each server gets one warm-up session first
(Mailhost measures new blobs once, Dovecot builds its index), then the best of
``--rounds`` timed sessions counts; the two servers take turns, round by round.

Mailhost runs as ``manage.py runmailservers --only pop3`` on a throw-away data
directory (SQLite unless DATABASE_URL is set). Dovecot (``dovecot-pop3d``, which
this script installs with apt-get when missing) runs in the foreground with a
configuration, base_dir, user and Maildir of its own in a temporary directory;
no system service is used. Its Maildir holds the messages with LF line ends, as
Dovecot itself stores delivered mail.

    python bench/pop3.py [--messages 1000] [--rounds 5] [--window 16]
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_corpus_argument, corpus_messages, free_port

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench@pop3bench.example", "bench password 123"


def corpus(corpora: Path, count: int) -> list[bytes]:
    """Real messages of mixed size, CRLF, without the mbox 'From ' line."""
    files = sorted((corpora / "ham").iterdir()) + sorted((corpora / "spam").iterdir())
    step = max(1, len(files) // count)
    return corpus_messages(files[::step][:count])


# --- a small pipelining POP3 client ------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = bytearray()
        self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self.fill()
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        if not line.startswith(b"+OK"):
            raise RuntimeError(line.decode(errors="replace"))
        return line

    def fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def multiline_body(self) -> int:
        """Octets of one multi-line body, up to and including its terminator."""
        start = 0
        while True:
            if self.buffer.startswith(b".\r\n"):
                del self.buffer[:3]
                return 3
            end = self.buffer.find(b"\r\n.\r\n", start)
            if end >= 0:
                del self.buffer[:end + 5]
                return end + 5
            start = max(0, len(self.buffer) - 4)
            self.fill()

    def login(self) -> int:
        self.command(f"USER {USER}")
        self.command(f"PASS {PASSWORD}")
        return int(self.command("STAT").split()[1])

    def retrieve_all(self, count: int, window: int) -> int:
        received = 0
        for first in range(1, count + 1, window):
            numbers = range(first, min(count, first + window - 1) + 1)
            self.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in numbers))
            for _ in numbers:
                self.line()
                received += self.multiline_body()
        return received

    def quit(self) -> None:
        self.command("QUIT")
        self.sock.close()


def session(port: int, count: int, window: int) -> tuple[float, int]:
    """One timed session: seconds for ``count`` RETRs, and the octets received."""
    client = Client(port)
    client.login()
    started = time.perf_counter()
    octets = client.retrieve_all(count, window)
    elapsed = time.perf_counter() - started
    client.quit()
    return elapsed, octets


def measure(servers: dict[str, int], count: int, rounds: int, window: int
            ) -> dict[str, tuple[float, float]]:
    """messages/s and MB/s of each server, best of ``rounds`` sessions. The
    servers take turns round by round, so that a burst of load from elsewhere
    on the machine does not fall on one of them only."""
    for name, port in servers.items():
        warm = Client(port)
        assert warm.login() == count, f"{name} does not list {count} messages"
        warm.quit()
    best = dict.fromkeys(servers, float("inf"))
    octets = dict.fromkeys(servers, 0)
    for _ in range(rounds):
        for name, port in servers.items():
            elapsed, octets[name] = session(port, count, window)
            best[name] = min(best[name], elapsed)
    figures = {}
    for name, seconds in best.items():
        rate, mbytes = count / seconds, octets[name] / seconds / 1e6
        print(f"{name:10s} {count} RETR in {seconds:.3f}s: {rate:8.0f} messages/s "
              f"{mbytes:7.1f} MB/s")
        figures[name] = (rate, mbytes)
    return figures


# --- Mailhost ------------------------------------------------------------------------


def start_mailhost(workdir: Path, messages: list[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, MAILHOST_DATA_DIR=str(workdir / "mailhost"), POP3_PORT="0",
               MAILHOST_LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="mailhost.settings",
               MAILHOST_FAST_PASSWORD_HASHER="1")
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from apps.directory import services as directory
    from apps.store.services import DeliveryRequest, deliver_batch

    directory.create_domain(USER.split("@")[1])
    mailbox = directory.create_mailbox(USER, PASSWORD)
    for start in range(0, len(messages), 100):
        deliver_batch([DeliveryRequest([mailbox.pk], data)
                       for data in messages[start:start + 100]])
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runmailservers", "--only", "pop3"],
        cwd=ROOT, env=dict(env, MAILHOST_LOG_LEVEL="INFO"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        match = re.search(r"listening name=pop3 address=\S+ port=(\d+)", line)
        if match:
            # Its further output is not needed; a full pipe must not block it.
            subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
            return process, int(match.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the Mailhost listener did not start")


# --- Dovecot -------------------------------------------------------------------------

DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {uid}
mail_location = maildir:{dir}/home/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def ensure_dovecot() -> None:
    if Path("/usr/lib/dovecot/pop3").exists() and shutil.which("dovecot"):
        return
    print("installing dovecot-pop3d (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "-qq",
                    "--no-install-recommends", "dovecot-pop3d"], check=True, env=env)
    # Never rely on, or leave running, the system's own instance.
    subprocess.run(["service", "dovecot", "stop"], check=False, capture_output=True)



def start_dovecot(workdir: Path, messages: list[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    ensure_dovecot()
    base = workdir / "dovecot"
    maildir = base / "home" / USER / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for index, data in enumerate(messages):
        lf = data.replace(b"\r\n", b"\n")
        (maildir / "cur" / f"{1_700_000_000 + index}.M{index}P1.bench,S={len(lf)}:2,S"
         ).write_bytes(lf)
    (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    port = free_port()
    config = base / "dovecot.conf"
    # Dovecot will not serve mail as root: under root the mail user is nobody.
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        for path in [base / "home", *(base / "home").rglob("*")]:
            os.chown(path, uid, gid)
    config.write_text(DOVECOT_CONF.format(dir=base, uid=uid, gid=gid, port=port))
    process = subprocess.Popen(["dovecot", "-F", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    log = base / "dovecot.log"
    raise RuntimeError("Dovecot did not start:\n" + (log.read_text() if log.exists() else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=16, help="pipelined RETRs")
    add_corpus_argument(parser)
    args = parser.parse_args()
    messages = corpus(args.corpus, args.messages)
    count = len(messages)
    sizes = sorted(len(m) for m in messages)
    print(f"{count} messages, {sum(sizes) / 1e6:.1f} MB, sizes {sizes[0]}..{sizes[-1]} "
          f"(median {sizes[count // 2]}) octets; window {args.window}, best of {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="bench-pop3-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Dovecot's auth process (user dovecot) reads the passwd file
        processes = []
        try:
            mailhost, mailhost_port = start_mailhost(workdir, messages)
            processes.append(mailhost)
            dovecot, dovecot_port = start_dovecot(workdir, messages)
            processes.append(dovecot)
            try:
                figures = measure({"Mailhost": mailhost_port, "Dovecot": dovecot_port},
                                  count, args.rounds, args.window)
            except RuntimeError:
                print((workdir / "dovecot" / "dovecot.log").read_text()[-3000:])
                raise
            ours, theirs = figures["Mailhost"], figures["Dovecot"]
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(f"ratio Mailhost/Dovecot: {ours[0] / theirs[0]:.2f} (messages/s), "
          f"{ours[1] / theirs[1]:.2f} (MB/s)")


if __name__ == "__main__":
    main()
