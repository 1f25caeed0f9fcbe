from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime

import pytest

from apps.delivery import services
from apps.directory.dns import dns_records, zone_lines
from apps.directory.models import Domain
from apps.mailservers.tls import server_context
from tests import fakedns
from tests.delivery.receiver import Receiver


@pytest.fixture(autouse=True)
def _delivery_settings(settings) -> Iterator[None]:
    """No network: DNS from the fake, no Celery kick (tests run the queue)."""
    settings.MAILHOST_QUEUE_KICK = False
    settings.MAILHOST_HOSTNAME = "mail.mailhost.test"
    settings.MAILHOST_DELIVERY_TIMEOUT = 10
    fakedns.ZONE.clear()
    yield
    fakedns.ZONE.clear()


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    """A remote server for example.net, reached through the transport map."""
    server = Receiver(server_context()).start()
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{server.port}"
    yield server
    server.stop()


def run_queue(now: datetime | None = None) -> int:
    """What beat and the workers do, synchronously: claim, then attempt each claim."""
    claims = services.claim_due(now=now)
    for claim, ids in claims:
        services.attempt(claim, ids, now=now)
    return len(claims)


def publish_domain(name: str) -> None:
    """Serve a hosted domain's records (its DKIM key among them) from the fake DNS."""
    domain = Domain.objects.get(name=name)
    fakedns.publish(zone_lines(dns_records(domain, mail_host="mail.mailhost.test")))


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
