"""Prometheus metrics: every instrument Mailhost exports, in one place.

The services count here (message flow from ``apps/store/trace.record``, filing
latency from ``store.deliver_batch``, remote delivery latency from the outbound
queue, authentication failures from ``directory.authenticate``, SMTP replies
and connections from the listeners' shared classes); the web's ``/metrics``,
the listener process's ``MAILHOST_METRICS_PORT`` and the workers'
``MAILHOST_WORKER_METRICS_PORT`` serve them.

Several processes serve one kind of work (listener children forked by the
supervisor, Celery's pool, gunicorn's workers), so values live in
prometheus_client's multi-process mode: each process adds to memory-mapped
files of its own under ``MAILHOST_METRICS_DIR/<kind>`` (no database write, no
system call per increment), and a scrape sums the files of its kind. A
process's kind is chosen by its entry point (``use_directory``); until then
(tests, management commands) it is ``other``, which nothing serves.

Every instrument has labels, so that no value (and no file) exists before a
process's first increment.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("mailhost.metrics")

# Until an entry point says otherwise: settings.py points PROMETHEUS_MULTIPROC_DIR
# at MAILHOST_METRICS_DIR/other.
_kind = "other"
_kind_lock = threading.Lock()


def _process_identifier() -> str:
    """The name of this process's files. It changes with the kind (and after
    a fork), and prometheus_client then moves every value to the new files."""
    return f"{os.getpid()}-{_kind}"


# Chosen before any instrument is made (prometheus_client's documented hook for
# a process identifier of one's own).
values.ValueClass = values.MultiProcessValue(_process_identifier)

# --- message flow (counted once the transaction recording the stage commits) ---------
MESSAGES = Counter(
    "mailhost_messages", "Messages by stage: received (MX), submitted (users), filed "
    "and junked (per mailbox; junked is the part of filed that went to Junk), sent, "
    "deferred and bounced (per remote recipient and attempt).", ["stage"], registry=None)
SPAM_VERDICTS = Counter(
    "mailhost_spam_verdicts", "The checks' verdict per recipient mailbox (ham or "
    "spam), or per message filed unchecked (checks failed or timed out).", ["verdict"],
    registry=None)

# Seconds from the 250 to the message in the mailbox (spool and checks
# included), and from the queue to the remote server's 250.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400,
                    86400)
FILING_LATENCY = Histogram(
    "mailhost_filing_latency_seconds", "Seconds from acceptance (the 250) to filing, "
    "per message and folder kind (inbox, junk, other).", ["folder"],
    buckets=_LATENCY_BUCKETS, registry=None)
REMOTE_DELIVERY_LATENCY = Histogram(
    "mailhost_remote_delivery_latency_seconds", "Seconds from entering the outbound "
    "queue to the remote server's 250, per recipient; attempt: first or retry.",
    ["attempt"], buckets=_LATENCY_BUCKETS, registry=None)

# --- listeners --------------------------------------------------------------------
SMTP_REPLIES = Counter(
    "mailhost_smtp_replies", "SMTP replies sent (last line of each), by listener and "
    "code class.", ["listener", "code_class"], registry=None)
CONNECTIONS = Counter(
    "mailhost_connections", "Connections accepted (or refused over the limits), by "
    "protocol and listener.", ["protocol", "listener"], registry=None)
CONNECTIONS_OPEN = Gauge(
    "mailhost_connections_open", "Connections open now, by protocol and listener.",
    ["protocol", "listener"], multiprocess_mode="livesum", registry=None)
AUTH_FAILURES = Counter(
    "mailhost_auth_failures", "Failed sign-ins, by protocol and reason (password, "
    "locked_out, disabled).", ["protocol", "reason"], registry=None)


# --- what the services call -----------------------------------------------------------

def count(instrument: Counter, counts: Mapping[str, int]) -> None:
    """Add ``counts`` (label value -> n) to a one-label counter."""
    for label, amount in counts.items():
        instrument.labels(label).inc(amount)


def observe(histogram: Histogram, observations: Iterable[tuple[str, float]]) -> None:
    """Observe (label value, seconds) pairs in a one-label histogram."""
    for label, seconds in observations:
        histogram.labels(label).observe(max(seconds, 0.0))


@functools.cache
def smtp_reply_counter(listener: str) -> dict[bytes, Counter]:
    """The reply counters of one SMTP listener by the reply's first digit,
    resolved once so that a reply costs one increment."""
    return {digit: SMTP_REPLIES.labels(listener, f"{digit.decode()}xx")
            for digit in (b"2", b"3", b"4", b"5")}


# --- process kinds, directories and the scrape ------------------------------------------

def use_directory(kind: str) -> Path:
    """Count this process (and the children it forks) under ``kind``: web,
    listeners, workers. The files of processes that are gone are removed
    first (a restarted process starts its counts from zero, as Prometheus
    expects of a restart)."""
    from django.conf import settings  # read when an entry point starts, not on import

    global _kind
    with _kind_lock:
        directory = Path(settings.MAILHOST_METRICS_DIR) / kind
        directory.mkdir(parents=True, exist_ok=True)
        forget_dead_processes(directory)
        # What finished management commands counted is of no use to anyone.
        forget_dead_processes(Path(settings.MAILHOST_METRICS_DIR) / "other")
        previous = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        if previous != directory:  # what was counted before is not this kind's
            for path in previous.glob(f"*_{os.getpid()}-{_kind}.db"):
                path.unlink(missing_ok=True)
        _kind = kind
    return directory


def _pid_of(path: Path) -> int | None:
    """The pid in ``<type>_<pid>-<kind>.db``."""
    with contextlib.suppress(ValueError):
        return int(path.stem.rpartition("_")[2].partition("-")[0])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def forget_dead_processes(directory: Path) -> None:
    """Remove the files of processes that are no longer running."""
    for path in directory.glob("*.db"):
        pid = _pid_of(path)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            path.unlink(missing_ok=True)


def process_died(pid: int) -> None:
    """A child of this process died: its open-connection gauges no longer
    count (its counters stay, so the kind's totals never go back)."""
    mark_process_dead(f"{pid}-{_kind}", os.environ["PROMETHEUS_MULTIPROC_DIR"])


def registry() -> CollectorRegistry:
    """A registry that reads the values of every process of this process's kind."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry


def serve(port: int, *, host: str) -> int:
    """Serve this kind's /metrics over HTTP on ``port`` (0: a free one) in a
    thread of this process; returns the bound port and logs it."""
    server, _ = start_http_server(port, addr=host, registry=registry())
    bound = server.server_port
    log.info("metrics listening for=%s address=%s port=%d", _kind, host, bound)
    return bound
