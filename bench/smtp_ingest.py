"""SMTP ingest to the 250: Postfix's ``smtp-source`` (a C client, so that the
load does not eat the CPU the server needs) sends 10 KiB messages to one
hosted mailbox, in two shapes, to Mailhost with its default settings (inbound
checks on, spool before the 250) and, in the same run, to a bare aiosmtpd
server that fsyncs each message to a file (bench/sink_aiosmtpd.py). Prints
messages/s and the servers' CPU milliseconds per message per shape (all their
processes; on a shared machine the CPU figure is the steadier one), their
memory (the largest process's peak RSS, and the PSS of all of them), the
ratios, and the load average before and after.

    .venv/bin/python bench/smtp_ingest.py --messages 1000
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_bench \\
        REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/smtp_ingest.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PYTHON,
    Background,
    MailhostInstance,
    load_average,
    peak_rss_mib,
    process_tree,
    tree_cpu_seconds,
    tree_memory_mib,
)

SENDER = "load@client.example"
RECIPIENT = "bench@bench.example"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def shapes(messages: int, sessions_kept: int) -> list[tuple[str, list[str]]]:
    """(name, smtp-source options): -m is the total, -s the parallel sessions,
    -d keeps a session for its next message instead of reconnecting."""
    return [
        ("20 sessions x 1 message/conn", ["-s", "20", "-m", str(messages)]),
        (f"{sessions_kept} sessions x {messages // sessions_kept} messages",
         ["-s", str(sessions_kept), "-m", str(messages), "-d"]),
    ]


@dataclass
class Measured:
    """One server's figures: per load, messages/s and CPU ms per message (all
    its processes); its memory at the end."""

    rates: list[float]
    cpu_ms: list[float]
    largest_peak_rss: float  # MiB, the largest of its processes' peak RSS
    pss: float  # MiB, summed over its processes
    processes: int


def drive(port: int, options: list[str], size: int) -> float:
    """Run one smtp-source load to the end; messages/s. smtp-source stops at
    the first reply it did not expect, so a clean exit means every message got
    its 250."""
    messages = int(options[options.index("-m") + 1])
    started = time.perf_counter()
    subprocess.run([SMTP_SOURCE, *options, "-l", str(size), "-M", "client.example",
                    "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=600)
    return messages / (time.perf_counter() - started)


def measure(port: int, pid: int, loads: list[tuple[str, list[str]]], size: int) -> Measured:
    """Each load after a warm-up, with the CPU time the server's processes
    spent on it, and their memory at the end."""
    drive(port, ["-s", "2", "-m", "20"], size)  # warm-up: connections, caches
    rates, cpu_ms = [], []
    for _, options in loads:
        messages = int(options[options.index("-m") + 1])
        cpu_before = tree_cpu_seconds(pid)
        rates.append(drive(port, options, size))
        cpu_ms.append(1000 * (tree_cpu_seconds(pid) - cpu_before) / messages)
    tree = process_tree(pid)
    return Measured(rates, cpu_ms, max(peak_rss_mib(member) for member in tree),
                    tree_memory_mib(pid)[1], len(tree))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per shape")
    parser.add_argument("--sessions-kept", type=int, default=5,
                        help="sessions of the second shape, each sending messages/N")
    parser.add_argument("--size", type=int, default=10_240)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
    load_before = load_average()
    loads = shapes(args.messages, args.sessions_kept)

    instance = MailhostInstance(database_url)
    # The inbound checks stay on (as deployed), but answer from the tests' DNS
    # table: a benchmark sends no traffic off this machine.
    instance.env["MAILHOST_DNS_RESOLVER"] = "tests.fakedns.FakeResolver"
    try:
        if database_url:  # a server's database outlives the run: start it empty
            instance.manage("flush", "--no-input")
        instance.manage("createdomain", "bench.example")
        instance.manage("createmailbox", RECIPIENT, "--password-stdin",
                        stdin="bench password 123\n")
        server, ports = instance.start_listeners("smtp")
        try:
            mailhost = measure(ports["smtp"], server.process.pid, loads, args.size)
        finally:
            server.stop()

        with tempfile.TemporaryDirectory(prefix="sink-", dir=instance.tmp.name) as sink_dir:
            sink = Background([PYTHON, str(Path(__file__).with_name("sink_aiosmtpd.py")),
                               sink_dir])
            try:
                port = int(sink.wait_for(r"port=(\d+)").group(1))
                floor = measure(port, sink.process.pid, loads, args.size)
            finally:
                sink.stop()
    finally:
        instance.cleanup()

    backend = ("PostgreSQL" if database_url else "SQLite") + (
        " + Redis" if os.environ.get("REDIS_URL") else "")
    print(f"smtp_ingest: smtp-source, {args.messages} messages of {args.size} B per shape "
          f"(Mailhost on {backend}, default settings, {mailhost.processes} processes)")
    print(f"  load average before {load_before}, after {load_average()}")
    print(f"  {'shape':<32}{'Mailhost msg/s':>16}{'floor msg/s':>13}{'ratio':>7}"
          f"{'Mailhost CPU ms/msg':>21}{'floor CPU ms/msg':>18}{'ratio':>7}")
    for index, (name, _) in enumerate(loads):
        rate, floor_rate = mailhost.rates[index], floor.rates[index]
        cpu, floor_cpu = mailhost.cpu_ms[index], floor.cpu_ms[index]
        print(f"  {name:<32}{rate:>16.0f}{floor_rate:>13.0f}{rate / floor_rate:>7.2f}"
              f"{cpu:>21.2f}{floor_cpu:>18.2f}{cpu / floor_cpu:>7.2f}")
    print(f"  memory MiB, Mailhost / floor: largest process's peak RSS "
          f"{mailhost.largest_peak_rss:.1f} / {floor.largest_peak_rss:.1f} "
          f"({mailhost.largest_peak_rss / floor.largest_peak_rss:.2f}); PSS of all "
          f"{mailhost.processes} / {floor.processes} processes {mailhost.pss:.1f} / "
          f"{floor.pss:.1f} ({mailhost.pss / floor.pss:.2f})")
    print("  floor: bare aiosmtpd writing and fsyncing each message before its 250")

if __name__ == "__main__":
    main()
