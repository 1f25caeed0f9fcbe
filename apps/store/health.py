"""Heartbeats: every long-running process says now and then that it is alive.

``runmailservers`` beats every MAILHOST_HEARTBEAT_INTERVAL seconds with its
listeners; a beat-scheduled task records the worker that ran it; and beat
itself is recorded when it publishes that task (``before_task_publish`` fires
in the publishing process). The dashboard reads the rows.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.store.models import Heartbeat

log = logging.getLogger(__name__)

HEARTBEAT_TASK = "apps.store.tasks.heartbeat"


def beat(kind: str, *, host: str = "", detail: dict[str, Any] | None = None) -> None:
    """Record that this process is alive (one upsert)."""
    now = timezone.now()
    Heartbeat.objects.bulk_create(
        [Heartbeat(kind=kind, host=host or socket.gethostname(), pid=os.getpid(),
                   detail=detail or {}, started=now, seen=now)],
        update_conflicts=True, unique_fields=["kind", "host", "pid"],
        update_fields=["seen", "detail"])


def beat_published(sender: str | None = None, **_: Any) -> None:
    """``before_task_publish`` handler: beat sends the heartbeat task, so its
    publication is beat's own heartbeat. A failure must not stop beat."""
    if sender != HEARTBEAT_TASK:
        return
    try:
        beat("beat")
    except Exception:
        log.exception("recording beat's heartbeat failed")


@dataclass(frozen=True)
class ProcessHealth:
    kind: str
    host: str
    pid: int
    detail: dict[str, Any]
    started: datetime
    seen: datetime
    up: bool


def stale_after(kind: str) -> timedelta:
    """A process is stale after missing about three beats."""
    interval = (settings.MAILHOST_HEARTBEAT_INTERVAL if kind == "listeners"
                else settings.MAILHOST_WORKER_HEARTBEAT_INTERVAL)
    return timedelta(seconds=3 * interval)


def processes(*, now: datetime | None = None) -> list[ProcessHealth]:
    """The processes seen in the last day, newest first (one query)."""
    now = now or timezone.now()
    rows = Heartbeat.objects.filter(seen__gte=now - timedelta(days=1)).order_by(
        "kind", "-seen")
    return [ProcessHealth(row.kind, row.host, row.pid, row.detail, row.started, row.seen,
                          up=now - row.seen <= stale_after(row.kind)) for row in rows]


def prune(*, now: datetime | None = None) -> int:
    """Forget processes gone for more than a day."""
    now = now or timezone.now()
    return Heartbeat.objects.filter(seen__lt=now - timedelta(days=1)).delete()[0]
