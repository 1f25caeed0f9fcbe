"""Dovecot's imaptest against Mailhost and, in the same run, Dovecot itself.

1. The scripted conformance suite (``imaptest test=<its src/tests>``): test
   groups failed and skipped, base-protocol and extension commands failed.
2. The stress profile: random concurrent sessions on one user (and with --users,
   on N users), a fixed time, the sample mailbox appended from; ops/s and errors
   for both servers, and their ratio.

imaptest is Dovecot's tool; Debian does not package it and none of its code is
in this repository. Build it once against Debian's dovecot-dev (Dovecot 2.3)::

    git clone https://github.com/dovecot/imaptest /tmp/imaptest-src
    git -C /tmp/imaptest-src checkout 924f619    # the last commit that builds against 2.3
    bench/build_imaptest.sh /tmp/imaptest-src /tmp/imaptest-build   # prints the binary

then point IMAPTEST at the binary (the scripted tests are read from the
``tests`` directory beside it, or from IMAPTEST_TESTS)::

    IMAPTEST=/tmp/imaptest-build/src/imaptest .venv/bin/python bench/imaptest.py
    IMAPTEST=... .venv/bin/python bench/imaptest.py --only conformance --verbose
    IMAPTEST=... .venv/bin/python bench/imaptest.py --only stress --clients 20 --secs 20

Mailhost runs on SQLite in a data directory of its own, or on DATABASE_URL
(emptied first) and REDIS_URL when they are set; on a local PostgreSQL the
CPU time of its backends is printed too. MAILHOST_IMAP_PROCESSES=N runs the
IMAP listener in N processes (default: the core count, at most 4).
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
    Dovecot,
    MailhostInstance,
    add_corpus_argument,
    corpus_messages,
    load_average,
    postgres_cpu_seconds,
)
from imap import PASSWORD, USER

DOMAIN = USER.split("@")[1]


def imaptest_paths() -> tuple[Path, Path]:
    binary = os.environ.get("IMAPTEST")
    if not binary or not Path(binary).is_file():
        raise SystemExit("set IMAPTEST to a built imaptest binary (see this script's "
                         "docstring and bench/build_imaptest.sh)")
    tests = Path(os.environ.get("IMAPTEST_TESTS") or Path(binary).parent / "tests")
    if not tests.is_dir():
        raise SystemExit(f"no scripted tests at {tests}; set IMAPTEST_TESTS")
    return Path(binary), tests


def mended_tests(tests: Path, into: Path) -> Path:
    """A copy of the scripted tests in which ``urlauth2`` appends the two
    messages its commands use. As shipped (924f619, unchanged upstream since
    the test was added) it has no ``messages:`` header, so imaptest appends
    none (test-parser.c: message_count = 0) and its first command, FETCH 1:2,
    names messages that do not exist: every server answers BAD (RFC 3501
    §9 seq-number), Dovecot as Mailhost."""
    copy = into / "tests"
    shutil.copytree(tests, copy)
    urlauth2 = copy / "urlauth2"
    header, _, rest = urlauth2.read_text().partition("\n")
    urlauth2.write_text(f"{header}\nmessages: 2\n{rest}")
    return copy


def sample_mbox(path: Path, corpora: Path, count: int) -> None:
    """An mbox of real mail from the ham corpus, CRLF line ends, for APPEND."""
    with path.open("wb") as out:
        for data in corpus_messages(sorted((corpora / "ham").iterdir())[:count]):
            data = data.replace(b"\r\n", b"\n")
            # mboxrd quoting of body lines that would start a new message
            data = re.sub(rb"(?m)^(>*From )", rb">\1", data)
            out.write(b"From bench@bench.example Thu Jan  1 00:00:00 2026\n")
            out.write(data.replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n\r\n")


# The scripted tests' second user ("user 2: $user2", the urlauth2 group).
SECOND_USER = f"second@{DOMAIN}"


def stress_users(count: int) -> list[str]:
    """The bench user (conformance, one-user stress), the second user of the
    scripted tests, then stress1…stressN."""
    extra = [f"stress{index}@{DOMAIN}" for index in range(1, count + 1)] if count > 1 else []
    return [USER, SECOND_USER, *extra]


def second_user_folder(port: int) -> None:
    """The folder the scripted tests use (imaptest's default mailbox), for the
    second user too: its sessions SELECT it before the test begins."""
    client = imaplib.IMAP4("127.0.0.1", port)
    try:
        client.login(SECOND_USER, PASSWORD)
        client.create("imaptest")  # NO when it exists: fine
    finally:
        client.logout()


def skipped_groups(tests: Path, port: int) -> list[str]:
    """The test groups imaptest skips: those whose ``capabilities:`` header
    names one the server does not advertise after login. imaptest 924f619
    skips them but its totals line always says "0 skipped", so the bench
    compares the headers with the server's CAPABILITY itself."""
    client = imaplib.IMAP4("127.0.0.1", port)
    try:
        client.login(USER, PASSWORD)
        _, data = client.capability()
    finally:
        client.logout()
    advertised = {name.upper() for name in data[0].decode().split()}
    skipped = []
    for test in sorted(tests.iterdir()):
        if not test.is_file() or test.suffix == ".mbox":
            continue
        header = re.search(r"^capabilities:(.*)$", test.read_text(errors="replace"), re.M)
        if header and not {name.upper() for name in header.group(1).split()} <= advertised:
            skipped.append(test.name)
    return skipped


class Mailhost:
    name = "Mailhost"

    def __init__(self, users: list[str]) -> None:
        self.instance = MailhostInstance(os.environ.get("DATABASE_URL"))
        if os.environ.get("DATABASE_URL"):
            # A database server outlives the run (and the run before it).
            self.instance.manage("flush", "--no-input")
        self.instance.manage("createdomain", DOMAIN)
        # One process for all the mailboxes (createmailbox per user took
        # minutes for 20 users on a busy machine), through the same service.
        self.instance.manage("shell", "-c", "from apps.directory import services\n"
                             f"for address in {users!r}:\n"
                             f"    services.create_mailbox(address, {PASSWORD!r}, quota=0)")
        self.process, ports = self.instance.start_listeners("imap")
        self.port = ports["imap"]

    def stop(self) -> None:
        self.process.stop()
        self.instance.cleanup()


def start(name: str, users: list[str], dovecot_urlauth: bool = False) -> Mailhost | Dovecot:
    if name == "Mailhost":
        return Mailhost(users)
    return Dovecot({"INBOX": []}, connections=200, user=USER, password=PASSWORD,
                   extra_users=users[1:], settings=DOVECOT_URLAUTH if dovecot_urlauth else "")


# --dovecot-urlauth: URLAUTH and METADATA, which Mailhost advertises, turned on
# in Dovecot too, so that the suite's URLAUTH groups run against it rather than
# being skipped. (Dovecot 2.3 then fails urlauth2 as Mailhost does: the test
# appends no message before FETCH 1:2, which both answer BAD, RFC 3501 §9 seq-number;
# and its GENURLAUTH refuses the test's user in urlauth and urlauth-binary.)
DOVECOT_URLAUTH = """
imap_urlauth_host = *
mail_attribute_dict = file:%h/dovecot-attributes
protocol imap {
  imap_metadata = yes
}
"""


def run_imaptest(binary: Path, args: list[str], timeout: float) -> str:
    env = dict(os.environ)
    # imaptest links against Dovecot's private libraries.
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, ["/usr/lib/dovecot",
                                                    env.get("LD_LIBRARY_PATH")]))
    result = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    return result.stdout + result.stderr


def conformance(binary: Path, tests: Path, server: Mailhost | Dovecot,
                verbose: bool) -> tuple[str, str, str]:
    skipped = skipped_groups(tests, server.port)
    second_user_folder(server.port)
    output = run_imaptest(binary, ["host=127.0.0.1", f"port={server.port}", f"user={USER}",
                                   f"user2={SECOND_USER}", f"pass={PASSWORD}",
                                   f"test={tests}"], timeout=600)
    if verbose:
        print(f"--- {server.name} ---\n{output}")
    totals = re.findall(r"^\d+ test groups:.*$|^(?:base protocol|extensions):.*$",
                        output, re.M)
    failed = re.findall(r"^\*\*\* Test (\S+) command", output, re.M)
    groups = sorted(set(failed))
    return ("; ".join(totals) or output[-500:], ", ".join(groups) or "-",
            f"{len(skipped)} ({', '.join(skipped)})" if skipped else "0")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its descendants, living or reaped (their
    reaper's cutime/cstime): Dovecot's master and its imap processes, or the
    Mailhost listener. From /proc, so comparable on a busy machine."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            # utime, stime, cutime, cstime (stat fields 14-17)
            ticks += sum(int(value) for value in stats[current][11:15])
        todo += children.get(current, [])
    return ticks / os.sysconf("SC_CLK_TCK")


def stress(binary: Path, server: Mailhost | Dovecot, mbox: Path, users: int, clients: int,
           secs: int) -> tuple[float, int, str, float, float | None]:
    """ops/s, errors, the kinds of error, the server's CPU ms per operation,
    and for Mailhost on a local PostgreSQL its backends' CPU ms per operation."""
    user_args = [f"user={USER}"] if users == 1 else \
        ["user=stress%d@" + DOMAIN, f"users=1-{users}"]
    pid = server.process.process.pid
    database_url = os.environ.get("DATABASE_URL") if isinstance(server, Mailhost) else None
    cpu_before = tree_cpu_seconds(pid)
    database_before = postgres_cpu_seconds(database_url) if database_url else 0.0
    output = run_imaptest(binary, ["host=127.0.0.1", f"port={server.port}", *user_args,
                                   f"pass={PASSWORD}", f"mbox={mbox}",
                                   f"clients={clients}", f"secs={secs}"],
                          timeout=secs + 120)
    cpu = tree_cpu_seconds(pid) - cpu_before
    database_cpu = postgres_cpu_seconds(database_url) - database_before if database_url else None
    counts = _stress_ops(output)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    sample = "\n".join(dict.fromkeys(re.sub(r"\d+", "N", e) for e in errors).keys())
    per_op = 1000 / counts if counts else 0.0
    return (counts / secs, len(errors), sample[:2000], cpu * per_op,
            None if database_cpu is None else database_cpu * per_op)


def _stress_ops(output: str) -> int:
    """Operations in imaptest's Totals line (the sum of its counters)."""
    lines = output.splitlines()
    if "Totals:" not in lines:
        return 0
    # After the header lines (names, then percentages) comes the line of counts.
    for line in lines[lines.index("Totals:") + 1:]:
        values = line.split()
        if values and all(value.isdigit() for value in values):
            return sum(int(value) for value in values)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["conformance", "stress"])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--secs", type=int, default=20)
    parser.add_argument("--users", type=int, default=1,
                        help="stress on this many users instead of one")
    parser.add_argument("--messages", type=int, default=300, help="messages in the mbox")
    add_corpus_argument(parser)
    parser.add_argument("--verbose", action="store_true", help="print imaptest's output")
    parser.add_argument("--dovecot-urlauth", action="store_true",
                        help="turn URLAUTH and METADATA on in Dovecot for the conformance run")
    parser.add_argument("--mend-urlauth2", action="store_true",
                        help="run urlauth2 with the 'messages: 2' header it lacks upstream")
    parser.add_argument("--servers", default="Mailhost,Dovecot",
                        help="which to run (Mailhost alone while fixing)")
    args = parser.parse_args()
    binary, tests = imaptest_paths()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="imaptest-bench-") as tmp:
        mbox = Path(tmp) / "sample.mbox"
        sample_mbox(mbox, args.corpus, args.messages)
        users = stress_users(args.users)
        if args.mend_urlauth2:
            tests = mended_tests(tests, Path(tmp))
            print("urlauth2 mended: run with 'messages: 2' (upstream appends no message)")
        for name in args.servers.split(","):
            figures: dict[str, str] = {}
            if args.only in (None, "conformance"):
                server = start(name, users, args.dovecot_urlauth)
                try:
                    totals, groups, skipped = conformance(binary, tests, server,
                                                          args.verbose)
                finally:
                    server.stop()
                figures["conformance"] = totals
                figures["failed groups"] = groups
                figures["skipped groups"] = skipped
            if args.only in (None, "stress"):
                server = start(name, users)
                try:
                    started = time.perf_counter()
                    figures["load average before"] = load_average()
                    ops, errors, sample, cpu_ms, database_ms = stress(
                        binary, server, mbox, args.users, args.clients, args.secs)
                    figures["load average after"] = load_average()
                    print(f"{name}: stress ran {time.perf_counter() - started:.0f}s",
                          flush=True)
                finally:
                    server.stop()
                figures["ops/s"] = f"{ops:.1f}"
                figures["server CPU ms/op"] = f"{cpu_ms:.2f}"
                if database_ms is not None:
                    figures["PostgreSQL CPU ms/op"] = f"{database_ms:.2f}"
                if name == "Mailhost":
                    figures["IMAP processes"] = os.environ.get(
                        "MAILHOST_IMAP_PROCESSES", "default")
                figures["errors"] = str(errors)
                if sample:
                    figures["error kinds"] = "\n" + sample
            results[name] = figures
    for name, figures in results.items():
        print(f"\n== {name}")
        for key, value in figures.items():
            print(f"{key}: {value}")
    if args.only in (None, "stress") and len(results) == 2:
        mine, theirs = float(results["Mailhost"]["ops/s"]), float(results["Dovecot"]["ops/s"])
        backend = ("PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite") + (
            " + Redis" if os.environ.get("REDIS_URL") else "")
        print(f"\nstress ({args.users} user(s), {args.clients} clients, {args.secs}s, "
              f"Mailhost on {backend}): "
              f"Mailhost {mine:.1f} ops/s, Dovecot {theirs:.1f} ops/s, "
              f"ratio {mine / theirs if theirs else float('nan'):.2f}")
        # What a busy machine distorts least: CPU per operation (Dovecot's
        # over all its processes); above 1, Mailhost spends less.
        mine, theirs = (float(results[n]["server CPU ms/op"]) for n in ("Mailhost", "Dovecot"))
        print(f"server CPU per operation: Mailhost {mine:.2f} ms, Dovecot {theirs:.2f} ms, "
              f"ratio (Dovecot/Mailhost) {theirs / mine if mine else float('nan'):.2f}")
        if "PostgreSQL CPU ms/op" in results["Mailhost"]:
            mine += float(results["Mailhost"]["PostgreSQL CPU ms/op"])
            print(f"with PostgreSQL's backends: Mailhost {mine:.2f} ms, "
                  f"ratio (Dovecot/Mailhost) {theirs / mine if mine else float('nan'):.2f}")


if __name__ == "__main__":
    main()
