from __future__ import annotations

import contextlib
import poplib
from collections.abc import Callable, Iterator

import pytest

from apps.directory.models import Mailbox
from tests.conftest import ServerThread
from tests.factories import make_mailbox


@pytest.fixture
def pop_servers(transactional_db) -> Iterator[ServerThread]:
    server = ServerThread(["smtp", "pop3", "pop3s"]).start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(transactional_db) -> Mailbox:
    return make_mailbox("alice@pop.example")


@pytest.fixture
def connect(pop_servers: ServerThread) -> Iterator[Callable[[], poplib.POP3]]:
    """A poplib client on the plain POP3 port, closed after the test."""
    opened: list[poplib.POP3] = []

    def make() -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", pop_servers.port("pop3"), timeout=10)
        opened.append(client)
        return client

    yield make
    for client in opened:
        with contextlib.suppress(OSError):  # a socket the test took over and closed
            client.close()
