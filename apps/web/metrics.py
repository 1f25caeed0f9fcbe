"""``/metrics`` on the web port: the web processes' own metrics and the
figures read from the database at scrape time (queue, spool, storage), in
Prometheus' text format (mailhost/metrics.py has the instruments).

Only MAILHOST_METRICS_ALLOWED_NETWORKS (default: loopback) may read it, or a
scraper presenting MAILHOST_METRICS_TOKEN as ``Authorization: Bearer …``:
the figures tell a stranger how busy the server is."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.antispam.models import SpooledMessage
from apps.delivery.services import queue_summary
from apps.directory.models import Mailbox
from apps.store.services import storage_summary
from mailhost import metrics
from mailhost.networks import address_in


class DatabaseCollector(Collector):
    """Gauges read at scrape time: four aggregate queries, no row scan."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue = queue_summary()
        age = (timezone.now() - queue.oldest).total_seconds() if queue.oldest else 0.0
        storage = storage_summary(Mailbox.objects.all())
        yield GaugeMetricFamily("mailhost_queue_messages",
                                "Messages in the outbound queue.", value=queue.messages)
        yield GaugeMetricFamily("mailhost_queue_recipients",
                                "Remote recipients in the outbound queue.",
                                value=queue.recipients)
        yield GaugeMetricFamily("mailhost_queue_deferred_recipients",
                                "Queued recipients tried at least once.", value=queue.deferred)
        yield GaugeMetricFamily("mailhost_queue_oldest_age_seconds",
                                "Age of the oldest queued message (0: queue empty).",
                                value=age)
        yield GaugeMetricFamily("mailhost_spool_messages", "Inbound messages accepted "
                                "and waiting for their checks.",
                                value=SpooledMessage.objects.count())
        yield GaugeMetricFamily("mailhost_store_bytes",
                                "Bytes of mail in every mailbox's folders.", value=storage.used)
        yield GaugeMetricFamily("mailhost_store_quota_bytes", "Sum of the limited "
                                "mailboxes' quotas.", value=storage.quota)


def _allowed(request: HttpRequest) -> bool:
    token = settings.MAILHOST_METRICS_TOKEN
    presented = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
        return True
    return address_in(request.META.get("REMOTE_ADDR", ""),
                      settings.MAILHOST_METRICS_ALLOWED_NETWORKS)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    registry = metrics.registry()
    registry.register(DatabaseCollector())
    # The format the scraper asks for (Prometheus' text format or OpenMetrics),
    # as prometheus_client's own HTTP server answers.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)
