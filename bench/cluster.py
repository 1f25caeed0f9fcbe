"""Cluster: SMTP ingest, IMAP stress and IDLE wake-up across nodes, with one
listener node and with two, message blobs on the local disk and on S3
(SeaweedFS ``weed mini``, started here as the tests start it), all in one run.
Each figure is printed beside the reference measured in the same run (one
node, local store) and their ratio.

Nodes are ``runmailservers`` processes with data directories of their own on
one database (and Redis when REDIS_URL is set); with the local store they
share one blob directory (as a shared filesystem would), with S3 nothing on
disk. On two cores a second node cannot add throughput: the figures show that
it loses none, and what the object store costs.

- SMTP ingest: Postfix's ``smtp-source`` (one message per connection, as MX
  traffic comes), the messages split evenly over the nodes; messages/s to the
  250, with the inbound checks and the filing before it (MAILHOST_ANTISPAM_INLINE).
- IMAP stress: Dovecot's imaptest (see bench/imaptest.py for building it; set
  IMAPTEST), its clients split over the nodes, all on one mailbox; ops/s and
  errors. Skipped without IMAPTEST.
- IDLE wake-up: a client IDLE on the last node, a message delivered over SMTP
  to the first; the median time from the 250 to ``* n EXISTS``.

    .venv/bin/python bench/cluster.py
    DATABASE_URL=postgres://postgres@127.0.0.1/mailhost_bench \\
        REDIS_URL=redis://127.0.0.1:6379/0 IMAPTEST=... .venv/bin/python bench/cluster.py
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common import PYTHON, Background, MailhostInstance, add_corpus_argument
from imap import PASSWORD, USER
from imaptest import DOMAIN, _stress_ops, imaptest_paths, run_imaptest, sample_mbox
from smtp_ingest import SENDER, drive

from tests import s3_server

INGEST = f"ingest@{DOMAIN}"
IDLER = f"idler@{DOMAIN}"


class Cluster:
    """``nodes`` listener processes of one throwaway Mailhost: the first
    node's data directory holds the SQLite database (or DATABASE_URL's is
    used); each node has a data directory of its own."""

    def __init__(self, nodes: int, store: dict[str, str]) -> None:
        database_url = os.environ.get("DATABASE_URL")
        self.instance = MailhostInstance(database_url)
        base = Path(self.instance.tmp.name)
        if database_url:  # a server's database outlives the run: start it empty
            self.instance.manage("flush", "--no-input")
        self.instance.env.update(store)
        # Checked and filed before the 250 (so that the IDLE client hears of it
        # with no worker running), against the tests' DNS table: a benchmark
        # sends nothing off this machine.
        self.instance.env.update({"MAILHOST_ANTISPAM_INLINE": "1",
                                  "MAILHOST_DNS_RESOLVER": "tests.fakedns.FakeResolver"})
        self.instance.env["DATABASE_URL"] = database_url or f"sqlite:///{base}/mailhost.sqlite3"
        self.instance.manage("createdomain", DOMAIN)
        self.instance.manage("shell", "-c", "from apps.directory import services\n"
                             f"for address in {[USER, INGEST, IDLER]!r}:\n"
                             f"    services.create_mailbox(address, {PASSWORD!r}, quota=0)")
        self.processes: list[Background] = []
        self.ports: list[dict[str, int]] = []
        for index in range(nodes):
            data_dir = base / f"node{index}"
            data_dir.mkdir()
            env = dict(self.instance.env, MAILHOST_DATA_DIR=str(data_dir),
                       MAILHOST_STORAGE_ROOT=str(base / "messages"),  # unused with S3
                       MAILHOST_S3_CACHE_DIR=str(data_dir / "blob-cache"),
                       MAILHOST_LOG_LEVEL="INFO", SMTP_PORT="0", IMAP_PORT="0")
            process = Background([PYTHON, "manage.py", "runmailservers", "--only", "smtp,imap"],
                                 env)
            self.processes.append(process)
            self.ports.append({
                name: int(process.wait_for(rf"listening name={name} address=\S+ port=(\d+)")
                          .group(1)) for name in ("smtp", "imap")})

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.instance.cleanup()


def in_parallel(jobs: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(jobs)

    def run(index: int) -> None:
        results[index] = jobs[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def smtp_ingest(cluster: Cluster, messages: int, sessions: int, size: int) -> float:
    """Messages/s over all nodes; smtp-source fails unless every one got its 250."""
    nodes = cluster.ports
    for ports in nodes:  # warm-up: connections, caches
        drive(ports["smtp"], ["-s", "2", "-m", "10"], size)
    per_node = ["-s", str(max(1, sessions // len(nodes))), "-m", str(messages // len(nodes))]
    started = time.perf_counter()
    in_parallel([lambda p=ports: drive(p["smtp"], per_node, size) for ports in nodes])
    return (messages // len(nodes)) * len(nodes) / (time.perf_counter() - started)


def imap_stress(cluster: Cluster, binary: Path, mbox: Path, clients: int,
                secs: int) -> tuple[float, int]:
    """imaptest's operations/s summed over the nodes, and its error lines."""
    nodes = cluster.ports
    outputs = in_parallel([
        lambda p=ports: run_imaptest(binary, [
            "host=127.0.0.1", f"port={p['imap']}", f"user={USER}", f"pass={PASSWORD}",
            f"mbox={mbox}", f"clients={max(1, clients // len(nodes))}", f"secs={secs}"],
            timeout=secs + 120)
        for ports in nodes])
    ops = sum(_stress_ops(str(output)) for output in outputs)
    errors = sum(str(output).count("\nError:") for output in outputs)
    return ops / secs, errors


def _line(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the IMAP server closed the connection")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def _until(sock: socket.socket, buffer: bytearray, prefix: bytes) -> bytes:
    while not (line := _line(sock, buffer)).startswith(prefix):
        pass
    return line


def idle_wake(cluster: Cluster, rounds: int) -> float:
    """Median seconds from a delivery's 250 on the first node to the EXISTS of
    an IDLE session on the last."""
    sock = socket.create_connection(("127.0.0.1", cluster.ports[-1]["imap"]), timeout=30)
    buffer = bytearray()
    _line(sock, buffer)
    sock.sendall(f'a LOGIN "{IDLER}" "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
    _until(sock, buffer, b"b ")
    waits = []
    with smtplib.SMTP("127.0.0.1", cluster.ports[0]["smtp"], timeout=30) as smtp:
        for index in range(rounds):
            sock.sendall(b"i IDLE\r\n")
            _until(sock, buffer, b"+ ")
            smtp.sendmail(SENDER, [IDLER], f"Subject: wake {index}\r\n\r\nwake\r\n".encode())
            acknowledged = time.perf_counter()
            _until(sock, buffer, b"* %d EXISTS" % (index + 1))
            waits.append(time.perf_counter() - acknowledged)
            sock.sendall(b"DONE\r\n")
            _until(sock, buffer, b"i ")
    sock.close()
    return statistics.median(waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="SMTP messages per setup")
    parser.add_argument("--sessions", type=int, default=10, help="SMTP sessions at once")
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--clients", type=int, default=10, help="imaptest clients")
    parser.add_argument("--secs", type=int, default=10, help="imaptest seconds per setup")
    parser.add_argument("--idle-rounds", type=int, default=5)
    add_corpus_argument(parser)
    args = parser.parse_args()
    imaptest = imaptest_paths()[0] if os.environ.get("IMAPTEST") else None

    setups = [("local", 1), ("local", 2), ("s3", 1), ("s3", 2)]
    figures: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        mbox = Path(tmp) / "sample.mbox"
        if imaptest:
            sample_mbox(mbox, args.corpus, 100)
        s3 = s3_server.start(Path(tmp) / "seaweedfs")
        try:
            for store, nodes in setups:
                environment = {}
                if store == "s3":
                    environment = s3.settings()
                    environment["MAILHOST_BLOB_STORE"] += f"/{uuid.uuid4().hex}"
                cluster = Cluster(nodes, environment)
                try:
                    row = {"smtp": smtp_ingest(cluster, args.messages, args.sessions,
                                               args.size),
                           "idle": idle_wake(cluster, args.idle_rounds)}
                    if imaptest:
                        row["imap"], row["imap errors"] = imap_stress(
                            cluster, imaptest, mbox, args.clients, args.secs)
                finally:
                    cluster.stop()
                figures[store, nodes] = row
                print(f"{store} store, {nodes} node(s): {row}", flush=True)
        finally:
            s3.stop()

    backend = ("PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite") + (
        " + Redis" if os.environ.get("REDIS_URL") else " (no Redis: IDLE across nodes polls)")
    reference = figures["local", 1]
    print(f"\ncluster: {backend}; SMTP {args.messages} x {args.size} B in {args.sessions} "
          f"sessions; imaptest {args.clients} clients x {args.secs}s"
          + ("" if imaptest else " (skipped: IMAPTEST unset)"))
    print("  reference: 1 node, local store, measured in this run")
    header = f"  {'setup':<18}{'SMTP msg/s':>11}{'ratio':>7}"
    if imaptest:
        header += f"{'IMAP ops/s':>12}{'ratio':>7}{'errors':>8}"
    print(header + f"{'IDLE wake ms':>14}")
    for (store, nodes), row in figures.items():
        line = f"  {f'{store}, {nodes} node(s)':<18}{row['smtp']:>11.0f}" \
               f"{row['smtp'] / reference['smtp']:>7.2f}"
        if imaptest:
            line += f"{row['imap']:>12.0f}{row['imap'] / reference['imap']:>7.2f}" \
                    f"{row['imap errors']:>8.0f}"
        print(line + f"{row['idle'] * 1000:>14.0f}")
    for nodes in (1, 2):
        ratio = figures["s3", nodes]["smtp"] / figures["local", nodes]["smtp"]
        print(f"  S3 / local, {nodes} node(s): SMTP {ratio:.2f}" + (
            f", IMAP {figures['s3', nodes]['imap'] / figures['local', nodes]['imap']:.2f}"
            if imaptest else ""))


if __name__ == "__main__":
    main()
