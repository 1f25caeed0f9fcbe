"""Several listener processes on the same ports, so that every core serves mail.

The parent binds every listening socket once and forks the children, which
accept on those shared sockets (the kernel hands each connection to one of
them). The SMTP listeners (MX, submission, smtps) run in the first
MAILHOST_LISTENER_PROCESSES children, IMAP and POP3 in the first
MAILHOST_IMAP_PROCESSES, the others (ManageSieve) in the first only; there are
as many children as the larger count asks for. A folder change made in one
process reaches the IMAP sessions of the others at once, over Redis pub/sub
when REDIS_URL is set, else over Unix datagrams between the processes of the
host (apps/store/events.py); the POP3 maildrop lock is a database row. The
parent only supervises: it restarts a child that dies, forwards SIGTERM for a
graceful stop, and sends the listeners' heartbeat. A child dies with its
parent (PR_SET_PDEATHSIG), so that a SIGKILLed listener leaves nothing serving
behind it. Nothing acknowledged depends on a child staying alive: a 250 is
only sent after the message is durable (DESIGN.md "Storage")."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from django.db import connections

from mailhost import metrics

log = logging.getLogger("mailhost.listeners")

SMTP_LISTENERS = frozenset({"smtp", "submission", "smtps"})
IMAP_LISTENERS = frozenset({"imap", "imaps", "pop3", "pop3s"})
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # glibc's malloc.h
# A child that keeps dying at once is restarted at most this often.
_RESTART_PAUSE = 1.0


def bind_sockets(ports: dict[str, int], *, host: str) -> dict[str, socket.socket]:
    """A listening socket per name (port 0: a free one), to share with children."""
    sockets = {}
    for name, port in ports.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        sockets[name] = sock
    return sockets


def process_counts(names: list[str], *, smtp: int, imap: int) -> dict[str, int]:
    """How many listener processes serve each of ``names``: ``smtp`` the SMTP
    listeners, ``imap`` IMAP and POP3, one the others."""
    return {name: max(1, smtp if name in SMTP_LISTENERS else
                      imap if name in IMAP_LISTENERS else 1) for name in names}


def names_for(index: int, counts: dict[str, int]) -> list[str]:
    """The listeners child ``index`` serves."""
    return [name for name, count in counts.items() if index < count]


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that contends for malloc an arena of its own, up
    to 8 per core, and each keeps its freed memory: with a pool of ORM threads
    that is tens of MiB per process for no speed a listener can measure. An
    explicit MALLOC_ARENA_MAX in the environment wins."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas)


def raise_open_files_limit() -> int:
    """Every connection is a file descriptor and the usual soft limit is
    1,024, far below the ten thousand IDLE clients one listener process
    serves: the soft limit goes up to the hard one, which only an
    administrator raises (``ulimit -Hn``, systemd's ``LimitNOFILE=``).
    Returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            log.warning("cannot raise the open-file limit from %d", soft)
    return soft


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM still reaches it
        log.warning("cannot tie listener children to their parent's life")


class Supervisor:
    """Fork ``count`` children running ``serve(index)``; keep them alive until
    SIGTERM or SIGINT, then stop them gracefully and return."""

    def __init__(self, count: int, serve: Callable[[int], None],
                 heartbeat: Callable[[dict[int, int]], None], heartbeat_interval: float,
                 sockets: dict[str, socket.socket]) -> None:
        self.count = count
        self.serve = serve
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.sockets = sockets
        self.children: dict[int, tuple[int, float]] = {}  # pid -> index, started
        self.stopping = False

    def _fork(self, index: int) -> None:
        # No database connection may be shared with a child.
        connections.close_all()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before prctl
                    os._exit(1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                self.serve(index)
                code = 0
            except BaseException:
                log.exception("listener process %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = (index, time.monotonic())
        log.info("listener process started index=%d pid=%d", index, pid)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for index in range(self.count):
            self._fork(index)
        next_beat = 0.0
        restarts: dict[int, float] = {}
        while not self.stopping:
            self._reap(restarts)
            now = time.monotonic()
            for index, due in list(restarts.items()):
                if now >= due:
                    del restarts[index]
                    self._fork(index)
            if now >= next_beat:
                next_beat = now + self.heartbeat_interval
                try:
                    self.heartbeat({pid: index for pid, (index, _) in self.children.items()})
                except Exception:
                    log.exception("heartbeat failed")
                finally:
                    connections.close_all()
            time.sleep(0.1)
        self._shutdown()

    def _reap(self, restarts: dict[int, float]) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            index, started = child
            metrics.process_died(pid)
            log.warning("listener process died index=%d pid=%d status=%d: restarting",
                        index, pid, status)
            now = time.monotonic()
            restarts[index] = now + (_RESTART_PAUSE if now - started < _RESTART_PAUSE else 0)

    def _shutdown(self) -> None:
        """Children stop accepting and let their sessions finish (bounded by
        their own grace); the parent waits for them."""
        for sock in self.sockets.values():
            sock.close()  # the children's copies keep serving until they stop
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
