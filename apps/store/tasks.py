from celery import shared_task
from django.conf import settings

from apps.store import services


@shared_task
def collect_garbage() -> int:
    return services.collect_garbage(settings.MAILHOST_BLOB_GRACE_SECONDS)
