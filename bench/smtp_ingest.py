"""SMTP ingest: N messages of about 10 KB over C concurrent connections into one
hosted mailbox, for Mailhost and, in the same run, for a bare aiosmtpd server
that fsyncs each message to a file (bench/sink_aiosmtpd.py). Prints messages/s
and peak RSS of each server, and their ratio.

    .venv/bin/python bench/smtp_ingest.py --messages 2000 --connections 8
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_bench .venv/bin/python bench/smtp_ingest.py
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, Background, MailhostInstance, peak_rss_mib

RECIPIENT = "bench@bench.example"


def message(n: int, size: int) -> bytes:
    head = (f"From: load@client.example\r\nTo: {RECIPIENT}\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@client.example>\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


def drive(port: int, total: int, connections: int, size: int) -> float:
    """Send ``total`` messages over ``connections`` parallel sessions; messages/s."""
    per = [total // connections + (1 if i < total % connections else 0)
           for i in range(connections)]
    payloads = [[message(c * 1_000_000 + n, size) for n in range(count)]
                for c, count in enumerate(per)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(connections + 1)

    def client(batch: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                smtp.ehlo("client.example")
                barrier.wait()
                for data in batch:
                    smtp.sendmail("load@client.example", [RECIPIENT], data)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(batch,)) for batch in payloads]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=10_240)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")

    instance = MailhostInstance(database_url)
    # The inbound checks stay on (as deployed), but answer from the tests' DNS
    # table: a benchmark sends no traffic off this machine.
    instance.env["MAILHOST_DNS_RESOLVER"] = "tests.antispam.fakedns.FakeResolver"
    try:
        instance.manage("createdomain", "bench.example")
        instance.manage("createmailbox", RECIPIENT, "--password-stdin",
                        stdin="bench password 123\n")
        server, ports = instance.start_listeners("smtp")
        try:
            drive(ports["smtp"], 50, 2, args.size)  # warm-up: connections, caches
            mailhost_rate = drive(ports["smtp"], args.messages, args.connections, args.size)
            mailhost_rss = peak_rss_mib(server.process.pid)
        finally:
            server.stop()

        with tempfile.TemporaryDirectory(prefix="sink-", dir=instance.tmp.name) as sink_dir:
            sink = Background([PYTHON, str(Path(__file__).with_name("sink_aiosmtpd.py")),
                               sink_dir])
            try:
                port = int(sink.wait_for(r"port=(\d+)").group(1))
                drive(port, 50, 2, args.size)
                sink_rate = drive(port, args.messages, args.connections, args.size)
                sink_rss = peak_rss_mib(sink.process.pid)
            finally:
                sink.stop()
    finally:
        instance.cleanup()

    backend = "PostgreSQL" if database_url else "SQLite"
    print(f"smtp_ingest: {args.messages} messages of {args.size} B over "
          f"{args.connections} connections (Mailhost on {backend})")
    print(f"  {'server':<28}{'messages/s':>12}{'peak RSS MiB':>15}")
    print(f"  {'Mailhost':<28}{mailhost_rate:>12.0f}{mailhost_rss:>15.1f}")
    print(f"  {'aiosmtpd + fsync per file':<28}{sink_rate:>12.0f}{sink_rss:>15.1f}")
    print(f"  ratio Mailhost/reference: throughput {mailhost_rate / sink_rate:.2f}, "
          f"memory {mailhost_rss / sink_rss:.2f}")


if __name__ == "__main__":
    main()
