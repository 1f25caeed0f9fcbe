from datetime import timedelta
from typing import Any

from celery import current_app, current_task, shared_task
from django.conf import settings

from apps.store import health, leases, services, textindex, trace

# Kept after a periodic run until this share of the period has passed: the
# other beats' calls of the same period skip, this node's next one is free.
_PERIOD_SHARE_KEPT = 0.9


@shared_task
def run_periodic(task_name: str, period: float) -> Any:
    """Sent by beat, on every node, for each periodic task: runs the task here
    if this node takes its lease, so that one node runs each period's work
    (apps/store/leases.py). Returns the task's result, or None if skipped."""
    with leases.held(task_name, keep_for=timedelta(seconds=period * _PERIOD_SHARE_KEPT)) as ours:
        if not ours:
            return None
        return current_app.tasks[task_name]()


@shared_task
def collect_garbage() -> int:
    return services.collect_garbage(settings.MAILHOST_BLOB_GRACE_SECONDS)


@shared_task
def heartbeat() -> None:
    """Sent by beat only: a worker running it shows that both are alive."""
    health.beat("worker", host=current_task.request.hostname or "")


@shared_task
def prune_trace() -> int:
    health.prune()
    return trace.prune()


@shared_task
def index_blobs(shas: list[str]) -> int:
    """Full-text index rows for blobs delivered without them (the filing of
    inbound mail, ``textindex.index_after_commit``)."""
    return textindex.index_blobs(shas)


@shared_task
def index_unindexed() -> int:
    """What an ``index_blobs`` task lost with its worker left unindexed
    (searches read those messages meanwhile)."""
    indexed, after = 0, ""
    while (batch := textindex.index_missing(after=after)).last:
        indexed, after = indexed + batch.indexed, batch.last
    return indexed
