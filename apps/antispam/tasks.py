"""Celery tasks: they take primary keys (or blob names) and are idempotent."""

from __future__ import annotations

from celery import shared_task

from apps.antispam import learning, services


@shared_task
def check_and_file_many(spool_pks: list[int]) -> int:
    return services.file_waiting(spool_pks)


@shared_task
def check_and_file(spool_pk: int) -> bool:
    # Tasks queued by a version that enqueued one per message.
    return services.file_spooled(spool_pk)


@shared_task
def sweep_spool() -> int:
    return services.sweep_spool()


@shared_task
def train_messages(mailbox_id: int, blob_ids: list[str], is_spam: bool) -> int:
    return learning.train_stored(mailbox_id, blob_ids, is_spam=is_spam)
