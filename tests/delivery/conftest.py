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
from tests.delivery.tls_peers import DOMAIN, MX_HOST, LocalCA, PolicyServer
from tests.factories import make_mailbox


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


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def policy_server(ca: LocalCA) -> Iterator[PolicyServer]:
    server = PolicyServer(ca.server_context(f"mta-sts.{DOMAIN}"))
    yield server
    server.stop()


@pytest.fixture
def sts(settings, ca: LocalCA, policy_server: PolicyServer, db):
    """example.net publishes an MTA-STS record and policy; each test sets the mode."""
    settings.MAILHOST_TRANSPORTS = ""
    settings.MAILHOST_MTA_STS_CA_FILE = str(ca.path)
    settings.MAILHOST_MTA_STS_FETCH_PORT = policy_server.port
    fakedns.publish([f"{DOMAIN}. 3600 IN MX 10 {MX_HOST}.",
                     f"{MX_HOST}. 3600 IN A 127.0.0.1",
                     f"mta-sts.{DOMAIN}. 3600 IN A 127.0.0.1",
                     f'_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=first"'])
    policy_server.requests = 0
    policy_server.content_type = "text/plain"
    make_mailbox("alice@example.org")

    def publish(mode: str, mx: str = MX_HOST) -> None:
        policy_server.policy = (f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\n"
                                f"max_age: 86400\r\n").encode()
    return publish
