from celery import shared_task

from apps.certificates import services


@shared_task
def renew() -> bool:
    """Sent by beat: renews the listeners' certificate when fewer than
    MAILHOST_ACME_RENEW_DAYS remain (or its names changed)."""
    return services.renew()
