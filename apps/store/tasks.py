from celery import current_task, shared_task
from django.conf import settings

from apps.store import health, services, trace


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
