"""Outbound delivery: N messages of about 10 KB submitted (port 587, AUTH PLAIN)
to a remote domain that the transport map routes to Postfix's smtp-sink on
127.0.0.1, over --connections sessions (20, as smtp-source's load elsewhere).
Prints, each beside the reference and as a ratio to it:

- submission alone: messages/s until the last 250, with no worker running;
- the queue those left, drained by one Celery worker into the sink, from
  its first delivery on (Celery's start-up left out);
- end to end with 1 and with 2 worker processes (the first with beat inside):
  from the first submission to the sink's last acceptance;

and for each the CPU time per message of the Mailhost processes in play, the
listener and the workers apart, which a busy shared machine moves less than
the rates; and the load average, which says how busy it was.

The reference, in the same run: smtp-source pushing as many messages of the
same size straight into the sink. smtp-source cannot AUTH, and submission
requires it, so the load is a light asyncio client in one process, pipelining
MAIL, RCPT and DATA (RFC 2920) as the listener offers. Each phase gives up after --timeout s.

    .venv/bin/python bench/outbound.py --messages 2000      # SQLite, filesystem broker
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_outbound_bench \
      REDIS_URL=redis://127.0.0.1:6379/5 .venv/bin/python bench/outbound.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SENDER = "bench@bench.example"
PASSWORD = "bench password 123"
RECIPIENT = "sink@remote.example"



def ensure_postfix_tools() -> None:
    if shutil.which("smtp-sink") and shutil.which("smtp-source"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "-qq",
                    "--no-install-recommends", "postfix"], check=True, env=env)
    subprocess.run(["service", "postfix", "stop"], check=False, capture_output=True)


class Sink:
    """Postfix's smtp-sink on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def wait_for_first_delivery(queued: int, timeout: float) -> tuple[float, int]:
    """(perf_counter(), entries still queued) once a started worker has sent
    its first message: the drain rate leaves out Celery's start-up."""
    from apps.delivery.models import QueueEntry

    deadline = time.monotonic() + timeout
    while (left := QueueEntry.objects.count()) >= queued:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} entries queued, none sent")
        time.sleep(0.01)
    return time.perf_counter(), left


def wait_until_sent(timeout: float) -> float:
    """perf_counter() when the outbound queue is empty: a queue entry is
    deleted right after the sink's 250, so this is the last acceptance."""
    from apps.delivery.models import QueueEntry

    deadline = time.monotonic() + timeout
    while QueueEntry.objects.exists():
        if time.monotonic() > deadline:
            claimed = QueueEntry.objects.exclude(claim="").count()
            import glob
            print(sorted(glob.glob(os.environ["MAILHOST_DATA_DIR"] + "/broker/*/*"))[:20],
                  file=sys.stderr)
            raise TimeoutError(f"{QueueEntry.objects.count()} entries still queued, "
                               f"{claimed} of them claimed")
        time.sleep(0.02)
    return time.perf_counter()


def cpu_seconds(processes: list[subprocess.Popen]) -> float:
    """User + system CPU time so far of ``processes`` and their descendants
    (Celery's pool child does the work): per message, a figure that the load
    of a shared machine moves less than a rate does."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    wanted = {p.pid for p in processes}
    grown = True
    while grown:
        more = {pid for pid, (parent, _) in stats.items() if parent in wanted} - wanted
        grown = bool(more)
        wanted |= more
    return sum(stats[pid][1] for pid in wanted if pid in stats)


def message(n: int, size: int) -> bytes:
    head = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: outbound {n}\r\n"
            f"Message-ID: <out-{n}-{time.time_ns()}@bench.example>\r\n"
            "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


async def _session(port: int, messages: list[bytes]) -> None:
    """One submission connection: EHLO, AUTH PLAIN (loopback allows it without
    TLS), then per message MAIL, RCPT and DATA pipelined, and the content."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply(expect: str) -> None:
        while True:
            line = await reader.readline()
            if not line.startswith(expect.encode()):
                raise RuntimeError(f"expected {expect}, got {line!r}")
            if line[3:4] != b"-":
                return

    async def command(line: bytes, expect: str) -> None:
        writer.write(line)
        await reply(expect)

    await reply("220")
    await command(b"EHLO bench.example\r\n", "250")
    token = base64.b64encode(f"\0{SENDER}\0{PASSWORD}".encode())
    await command(b"AUTH PLAIN " + token + b"\r\n", "235")
    envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()
    for data in messages:
        writer.write(envelope)  # RFC 2920: one group, DATA last
        for expect in ("250", "250", "354"):
            await reply(expect)
        await command(data + b".\r\n", "250")  # no line starts with a dot
    await command(b"QUIT\r\n", "221")
    writer.close()


def submit(port: int, total: int, connections: int, size: int, offset: int) -> None:
    """``total`` messages over ``connections`` sessions from one asyncio loop: a
    light client, so that the load does not take the CPU the server needs."""
    per = [total // connections + (1 if i < total % connections else 0)
           for i in range(connections)]
    batches = [[message(offset + index * 1_000_000 + n, size) for n in range(count)]
               for index, count in enumerate(per)]

    async def run() -> None:
        await asyncio.gather(*(_session(port, batch) for batch in batches))

    asyncio.run(run())


class Instance:
    def __init__(self, sink_port: int) -> None:
        self.tmp = tempfile.mkdtemp(prefix="mailhost-outbound-")
        self.env = dict(os.environ)
        self.env.update({
            "MAILHOST_DATA_DIR": self.tmp, "MAILHOST_LOG_LEVEL": "WARNING",
            "MAILHOST_FAST_PASSWORD_HASHER": "1", "MAILHOST_HOSTNAME": "mail.bench.example",
            "MAILHOST_TRANSPORTS": f"remote.example=127.0.0.1:{sink_port}",
            "MAILHOST_QUEUE_INTERVAL": "1",
            "MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR": "1000000",
            "SUBMISSION_PORT": "0",
        })
        self.processes: list[subprocess.Popen] = []
        self.manage("migrate", "--no-input", "-v0")
        if self.env.get("DATABASE_URL"):
            self.manage("flush", "--no-input")  # a database left by an earlier run
        self.manage("createdomain", "bench.example")
        self.manage("createmailbox", SENDER, "--password-stdin", stdin=PASSWORD + "\n")

    def manage(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, input=stdin,
                              text=True, check=True, capture_output=True).stdout

    def spawn(self, args: list[str], log: str, level: str = "WARNING") -> subprocess.Popen:
        out = open(Path(self.tmp) / log, "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(args, cwd=ROOT, env=dict(self.env, MAILHOST_LOG_LEVEL=level),
                                   stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_submission(self) -> int:
        self.spawn([PYTHON, "manage.py", "runmailservers", "--only", "submission"],
                   "listeners.log", level="INFO")
        log = Path(self.tmp) / "listeners.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"listening name=submission address=\S+ port=(\d+)",
                              log.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            time.sleep(0.1)
        raise RuntimeError(log.read_text(errors="replace"))

    def start_workers(self, count: int) -> list[subprocess.Popen]:
        """``count`` worker processes, the first with beat inside (as the Procfile runs it)."""
        return [self.spawn([PYTHON, "-m", "celery", "-A", "mailhost", "worker",
                            "--concurrency", "1", "--hostname", f"w{n}-{count}@%h",
                            "--loglevel", "INFO",
                            *(["--beat", "--schedule", str(Path(self.tmp) / f"beat-{count}")]
                              if n == 0 else [])],
                           f"worker{n}-{count}.log", level="INFO")
                for n in range(count)]

    def stop(self, processes: list[subprocess.Popen]) -> None:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        return "".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-30000:]
                       for log in sorted(Path(self.tmp).glob("*.log")))

    def cleanup(self) -> None:
        self.stop([p for p in self.processes if p.poll() is None])
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    ensure_postfix_tools()
    load_before = os.getloadavg()[0]

    # (path, messages/s, CPU seconds per message of the listener, of the
    # workers; None where that process took no part)
    figures: list[tuple[str, float, float | None, float | None]] = []
    sink = Sink()
    instance: Instance | None = None
    try:
        instance = Instance(sink.port)
        # This process reads the instance's queue to see when it has drained.
        os.environ.update(instance.env, DJANGO_SETTINGS_MODULE="mailhost.settings")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        port = instance.start_submission()
        submit(port, 20, 2, args.size, offset=0)  # warm-up: connections, caches
        # Submission alone: no worker runs, the queue fills; then one worker drains it.
        listener = instance.processes[:1]
        started, cpu = time.perf_counter(), cpu_seconds(listener)
        submit(port, args.messages, args.connections, args.size, offset=10_000_000)
        figures.append(("submission -> queue (no worker)",
                        args.messages / (time.perf_counter() - started),
                        (cpu_seconds(listener) - cpu) / args.messages, None))
        processes = instance.start_workers(1)
        try:
            started, left = wait_for_first_delivery(args.messages + 20, args.timeout)
            cpu = cpu_seconds(processes)
            rate = left / (wait_until_sent(args.timeout) - started)
            figures.append(("queue -> smtp-sink, 1 worker (drain)", rate, None,
                            (cpu_seconds(processes) - cpu) / left))
        except TimeoutError:
            print(instance.logs(), file=sys.stderr)
            raise
        finally:
            instance.stop(processes)
        for workers in (1, 2):
            processes = instance.start_workers(workers)
            try:
                submit(port, 20, 2, args.size, offset=workers * 10_000_000)  # warm-up
                wait_until_sent(args.timeout)
                started = time.perf_counter()
                cpu = cpu_seconds(listener), cpu_seconds(processes)
                submit(port, args.messages, args.connections, args.size,
                       offset=workers * 20_000_000)
                rate = args.messages / (wait_until_sent(args.timeout) - started)
                figures.append((f"submission -> queue -> smtp-sink, {workers} worker(s)", rate,
                                (cpu_seconds(listener) - cpu[0]) / args.messages,
                                (cpu_seconds(processes) - cpu[1]) / args.messages))
            except TimeoutError:
                print(instance.logs(), file=sys.stderr)
                raise
            finally:
                instance.stop(processes)

        # smtp-source returns once the sink has answered its last message.
        started = time.perf_counter()
        subprocess.run(["smtp-source", "-s", str(args.connections), "-l", str(args.size),
                        "-m", str(args.messages), "-C", str(args.messages // args.connections),
                        "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{sink.port}"],
                       check=True, timeout=args.timeout)
        reference = args.messages / (time.perf_counter() - started)
    finally:
        if instance is not None:
            instance.cleanup()
        sink.stop()

    broker = "Redis" if os.environ.get("REDIS_URL") else "filesystem broker"
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"outbound: {args.messages} messages of {args.size} B submitted (AUTH PLAIN) over "
          f"{args.connections} connections to smtp-sink ({database}, {broker}); "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"  {'path':<52}{'messages/s':>12}{'ratio':>8}"
          f"{'CPU ms/msg: listener':>22}{'workers':>9}")
    for name, rate, listener_cpu, workers_cpu in figures:
        print(f"  {'Mailhost ' + name:<52}{rate:>12.0f}{rate / reference:>8.3f}"
              f"{_milliseconds(listener_cpu):>22}{_milliseconds(workers_cpu):>9}")
    print(f"  {'smtp-source -> smtp-sink (reference)':<52}{reference:>12.0f}{1:>8.3f}")


def _milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


if __name__ == "__main__":
    main()
