"""``manage.py runmailservers``: every mail listener, in one asyncio process or
in several processes sharing the listening sockets (MAILHOST_LISTENER_PROCESSES
for SMTP, MAILHOST_IMAP_PROCESSES for IMAP and POP3:
apps/mailservers/processes.py)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.certificates.storage import certificate_paths, self_signed_missing
from apps.mailservers.listeners import (
    LISTENERS,
    send_heartbeats,
    start_listeners,
    stop_listeners,
)
from apps.mailservers.processes import (
    IMAP_LISTENERS,
    Supervisor,
    bind_sockets,
    limit_malloc_arenas,
    names_for,
    process_counts,
    raise_open_files_limit,
)
from apps.mailservers.tls import server_context
from apps.store import events, health
from mailhost import metrics

log = logging.getLogger("mailhost.listeners")


def _make_certificate_apart() -> None:
    """On a first start the self-signed pair is made by a forked child: the
    cryptography it loads (several MiB) would otherwise stay in the listener
    for good. Should the child fail, server_context() makes the pair itself."""
    if not self_signed_missing():
        return
    child = multiprocessing.get_context("fork").Process(
        target=certificate_paths, name="certificate")
    child.start()
    child.join()


class Command(BaseCommand):
    help = "Run the mail listeners (SMTP, and IMAP/POP3/submission as they exist)."
    # The system checks import every URL conf and view (DRF, the API schema,
    # the web apps): tens of MiB in each listener process that never serves
    # HTTP. ``manage.py check`` and the web server still run them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", help="comma-separated listener names "
                            f"(default: all of {', '.join(LISTENERS)})")

    def handle(self, *args: object, **options: object) -> None:
        names = str(options["only"]).split(",") if options["only"] else list(LISTENERS)
        unknown = [n for n in names if n not in LISTENERS]
        if unknown:
            raise SystemExit(f"unknown listener(s): {', '.join(unknown)}")
        ports = {n: settings.MAILHOST_PORTS[n] for n in names}
        limit_malloc_arenas()  # before any thread starts
        _make_certificate_apart()  # the same: it forks
        log.info("open-file limit %d", raise_open_files_limit())
        # Every listener process (children included) counts as "listeners";
        # this one serves their sum.
        metrics.use_directory("listeners")
        if settings.MAILHOST_METRICS_PORT is not None:
            metrics.serve(settings.MAILHOST_METRICS_PORT, host=settings.MAILHOST_METRICS_BIND)
        counts = process_counts(names, smtp=settings.MAILHOST_LISTENER_PROCESSES,
                                imap=settings.MAILHOST_IMAP_PROCESSES)
        processes = max(counts.values())
        if processes <= 1:
            asyncio.run(self._serve(ports))
            return
        # The certificate is made (first start) before forking, once.
        server_context()
        sockets = bind_sockets(ports, host=settings.MAILHOST_BIND)
        bound = {name: sock.getsockname()[1] for name, sock in sockets.items()}
        for name, port in bound.items():
            log.info("listening name=%s address=%s port=%d processes=%d", name,
                     settings.MAILHOST_BIND, port, counts[name])

        def serve(index: int) -> None:
            served = names_for(index, counts)
            asyncio.run(self._serve(
                {n: bound[n] for n in served}, {n: sockets[n] for n in served},
                {n: counts[n] for n in served}))

        def heartbeat(children: dict[int, int]) -> None:
            health.beat("listeners", detail={
                "listeners": {name: {"port": port, "serving": bool(children)}
                              for name, port in bound.items()},
                "processes": len(children)})

        Supervisor(processes, serve, heartbeat, settings.MAILHOST_HEARTBEAT_INTERVAL,
                   sockets).run()
        log.info("stopped")

    async def _serve(self, ports: dict[str, int],
                     sockets: dict[str, socket.socket] | None = None,
                     processes: dict[str, int] | None = None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The ORM work of every session runs in this pool (mailhost/asyncdb.py):
        # Python's default of cores + 4 threads has sessions queue behind each
        # other's database and Redis round trips, not behind the CPU.
        loop.set_default_executor(ThreadPoolExecutor(
            max_workers=settings.MAILHOST_LISTENER_THREADS, thread_name_prefix="orm"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # IMAP sessions hear of the other processes' folder changes (the
        # worker's filings, the other listener processes' sessions) from
        # their notices; with Redis, over Redis (apps/imap/notify.py).
        hears_peers = not settings.REDIS_URL and bool(IMAP_LISTENERS & set(ports))
        if hears_peers:
            events.peer_notices.listen(loop)
        listeners = await start_listeners(
            ports, host=settings.MAILHOST_BIND, tls_context=server_context(),
            sockets=sockets, processes=processes)
        # With several processes the parent beats for all of them.
        heartbeats = None if sockets is not None else asyncio.create_task(
            send_heartbeats(listeners, settings.MAILHOST_HEARTBEAT_INTERVAL))
        await stop.wait()
        if heartbeats is not None:
            heartbeats.cancel()
        log.info("shutting down: no new connections, waiting up to %ds for sessions",
                 settings.MAILHOST_SHUTDOWN_GRACE)
        await stop_listeners(listeners, grace=settings.MAILHOST_SHUTDOWN_GRACE)
        if hears_peers:
            events.peer_notices.close(loop)
        log.info("stopped")
