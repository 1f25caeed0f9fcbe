"""The Celery app: configured from Django settings (CELERY_* names)."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")

app = Celery("mailhost")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _worker_metrics(**_kwargs: Any) -> None:
    """The worker and its pool (forked after this) count as "workers"; the
    main process serves their sum on MAILHOST_WORKER_METRICS_PORT if set."""
    from django.conf import settings

    from mailhost import metrics

    metrics.use_directory("workers")
    if settings.MAILHOST_WORKER_METRICS_PORT is not None:
        metrics.serve(settings.MAILHOST_WORKER_METRICS_PORT,
                      host=settings.MAILHOST_METRICS_BIND)
