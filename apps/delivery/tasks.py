"""Celery tasks of the outbound queue: they take primary keys and claim
tokens, make one attempt, and are safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from apps.delivery import services, tlsrpt


@shared_task
def run_queue() -> int:
    """Claim the due entries (every few seconds from beat, and when mail is
    queued) and start one delivery task per destination domain."""
    # Cleared before the claim: mail committed from now on kicks a run of its own.
    cache.delete(services.KICK_PENDING)
    claims = services.claim_due(on_claimed=lambda claim, ids: deliver.delay(claim, ids))
    return len(claims)


@shared_task
def deliver(claim: str, entry_ids: list[int]) -> None:
    services.attempt(claim, entry_ids,
                     follow_up_seconds=settings.MAILHOST_QUEUE_FOLLOW_UP_SECONDS)


@shared_task
def send_tls_reports() -> int:
    """Hourly from beat; sends each finished day's reports once (RFC 8460 §4)."""
    return tlsrpt.send_reports()
