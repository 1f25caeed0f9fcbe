from celery import shared_task

from apps.directory import dkim_rotation


@shared_task
def rotate_dkim_keys() -> None:
    """Sent by beat hourly: the due steps of every domain's DKIM key rotation
    (apps/directory/dkim_rotation.py)."""
    dkim_rotation.rotate_all()
