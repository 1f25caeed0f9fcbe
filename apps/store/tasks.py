from celery import current_task, shared_task
from django.conf import settings

from apps.store import health, services, textindex, trace


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
