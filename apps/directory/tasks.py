from celery import shared_task

from apps.directory import dkim_rotation, dnspublish


@shared_task
def rotate_dkim_keys() -> None:
    """Sent by beat hourly: the due steps of every domain's DKIM key rotation
    (apps/directory/dkim_rotation.py)."""
    dkim_rotation.rotate_all()


@shared_task
def publish_dns() -> None:
    """Sent by beat hourly: every domain with an update target brought up to
    date in its zone (apps/directory/dnspublish.py)."""
    dnspublish.publish_all()
