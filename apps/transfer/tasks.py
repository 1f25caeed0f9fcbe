"""Celery tasks of imports started from the admin panel (apps/transfer/jobs.py)."""

from __future__ import annotations

from celery import shared_task

from apps.transfer import jobs


@shared_task
def run_import_job(job_id: int) -> None:
    jobs.run_job(job_id)
