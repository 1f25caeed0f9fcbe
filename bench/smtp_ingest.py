"""SMTP ingest to the 250: Postfix's ``smtp-source`` (a C client, so that the
load does not eat the CPU the server needs) sends 10 KiB messages to one
hosted mailbox, in two shapes, to Mailhost with its default settings (inbound
checks on, spool before the 250) and, in the same run, to a bare aiosmtpd
server that fsyncs each message to a file (bench/sink_aiosmtpd.py). Prints
messages/s per shape and the peak RSS of each server, and their ratios.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, Background, MailhostInstance, process_tree, tree_memory_mib

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


def measure(port: int, pid: int, loads: list[tuple[str, list[str]]],
            size: int) -> tuple[list[float], tuple[float, float]]:
    """Messages/s per load after a warm-up, and the memory of the server's
    processes (``tree_memory_mib``)."""
    drive(port, ["-s", "2", "-m", "20"], size)  # warm-up: connections, caches
    return [drive(port, options, size) for _, options in loads], tree_memory_mib(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per shape")
    parser.add_argument("--sessions-kept", type=int, default=5,
                        help="sessions of the second shape, each sending messages/N")
    parser.add_argument("--size", type=int, default=10_240)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
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
            mailhost_rates, mailhost_rss = measure(ports["smtp"], server.process.pid,
                                                   loads, args.size)
            mailhost_processes = len(process_tree(server.process.pid))
        finally:
            server.stop()

        with tempfile.TemporaryDirectory(prefix="sink-", dir=instance.tmp.name) as sink_dir:
            sink = Background([PYTHON, str(Path(__file__).with_name("sink_aiosmtpd.py")),
                               sink_dir])
            try:
                port = int(sink.wait_for(r"port=(\d+)").group(1))
                sink_rates, sink_rss = measure(port, sink.process.pid, loads, args.size)
            finally:
                sink.stop()
    finally:
        instance.cleanup()

    backend = ("PostgreSQL" if database_url else "SQLite") + (
        " + Redis" if os.environ.get("REDIS_URL") else "")
    print(f"smtp_ingest: smtp-source, {args.messages} messages of {args.size} B per shape "
          f"(Mailhost on {backend}, default settings)")
    print(f"  {'shape':<32}{'Mailhost msg/s':>16}{'floor msg/s':>13}{'ratio':>7}")
    for (name, _), mailhost_rate, sink_rate in zip(loads, mailhost_rates, sink_rates,
                                                   strict=True):
        print(f"  {name:<32}{mailhost_rate:>16.0f}{sink_rate:>13.0f}"
              f"{mailhost_rate / sink_rate:>7.2f}")
    (mailhost_peak, mailhost_pss), (sink_peak, sink_pss) = mailhost_rss, sink_rss
    print(f"  memory MiB, Mailhost's {mailhost_processes} processes summed / floor: "
          f"peak RSS {mailhost_peak:.1f} / {sink_peak:.1f} ({mailhost_peak / sink_peak:.2f}), "
          f"PSS {mailhost_pss:.1f} / {sink_pss:.1f} ({mailhost_pss / sink_pss:.2f})")
    print("  floor: bare aiosmtpd writing and fsyncing each message before its 250")


if __name__ == "__main__":
    main()
