"""The dashboard: does mail flow? Counters, queue, storage, process health,
each read from what the services keep (never by scanning messages)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.delivery.services import queue_summary
from apps.directory.access import mailboxes_for
from apps.store import health, trace
from apps.store.services import storage_summary
from apps.web.auth import admin_required
from apps.webadmin.charts import FlowChart, flow_chart
from apps.webadmin.scope import managed_domains

PROCESS_KINDS = {"listeners": "Mail listeners", "worker": "Celery worker", "beat": "Celery beat"}


def _hour_label(hour: int) -> str:
    return f"{datetime.fromtimestamp(hour * 3600, UTC):%H:%M}"


def _day_label(hour: int) -> str:
    return f"{datetime.fromtimestamp(hour * 3600, UTC):%b %d}"


def flow_charts(now: float | None = None) -> list[FlowChart]:
    """The last 24 hours by hour and the last 30 days by day, from one query."""
    this_hour = int((now or time.time()) // 3600)
    first_day_hour = (this_hour // 24 - 29) * 24
    counts = trace.flow_counts(first_day_hour)
    return [
        flow_chart("Last 24 hours, per hour (UTC)", counts, first_hour=this_hour - 23,
                   buckets=24, hours_per_bucket=1, label=_hour_label, tick_every=4),
        flow_chart("Last 30 days, per day (UTC)", counts, first_hour=first_day_hour,
                   buckets=30, hours_per_bucket=24, label=_day_label, tick_every=5),
    ]


@admin_required
def dashboard(request: HttpRequest) -> HttpResponse:
    domains = managed_domains(request.user)
    platform = domains is None  # flow and processes are the whole platform's
    context: dict[str, object] = {
        "section": "dashboard", "platform": platform,
        "queue": queue_summary(sender_domains=domains),
        "storage": storage_summary(mailboxes_for(request.user)),
    }
    if platform:
        processes = health.processes()
        seen = {p.kind for p in processes}
        context.update({
            "charts": flow_charts(),
            "processes": processes,
            "never_seen": [label for kind, label in PROCESS_KINDS.items() if kind not in seen],
            "process_kinds": PROCESS_KINDS,
            "last_delivery": trace.last_delivery(),
        })
    return render(request, "webadmin/dashboard.html", context)
