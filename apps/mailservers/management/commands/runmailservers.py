"""``manage.py runmailservers``: every mail listener in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.mailservers.listeners import (
    LISTENERS,
    send_heartbeats,
    start_listeners,
    stop_listeners,
)
from apps.mailservers.tls import server_context

log = logging.getLogger("mailhost.listeners")


class Command(BaseCommand):
    help = "Run the mail listeners (SMTP, and IMAP/POP3/submission as they exist)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", help="comma-separated listener names "
                            f"(default: all of {', '.join(LISTENERS)})")

    def handle(self, *args: object, **options: object) -> None:
        names = str(options["only"]).split(",") if options["only"] else list(LISTENERS)
        unknown = [n for n in names if n not in LISTENERS]
        if unknown:
            raise SystemExit(f"unknown listener(s): {', '.join(unknown)}")
        asyncio.run(self._serve({n: settings.MAILHOST_PORTS[n] for n in names}))

    async def _serve(self, ports: dict[str, int]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The ORM work of every session runs in this pool (mailhost/asyncdb.py):
        # Python's default of cores + 4 threads has sessions queue behind each
        # other's database and Redis round trips, not behind the CPU.
        loop.set_default_executor(ThreadPoolExecutor(
            max_workers=settings.MAILHOST_LISTENER_THREADS, thread_name_prefix="orm"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listeners = await start_listeners(
            ports, host=settings.MAILHOST_BIND, tls_context=server_context())
        heartbeats = asyncio.create_task(
            send_heartbeats(listeners, settings.MAILHOST_HEARTBEAT_INTERVAL))
        await stop.wait()
        heartbeats.cancel()
        log.info("shutting down: no new connections, waiting up to %ds for sessions",
                 settings.MAILHOST_SHUTDOWN_GRACE)
        await stop_listeners(listeners, grace=settings.MAILHOST_SHUTDOWN_GRACE)
        log.info("stopped")
