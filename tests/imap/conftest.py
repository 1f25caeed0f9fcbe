from __future__ import annotations

import contextlib
import imaplib
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ServerThread
from tests.factories import PASSWORD, make_mailbox
from tests.imap.helpers import RawIMAP


@pytest.fixture
def imap_port(mail_servers: ServerThread) -> int:
    return mail_servers.port("imap")


@pytest.fixture
def mailbox(transactional_db):  # type: ignore[no-untyped-def]
    return make_mailbox("alice@example.test")


@pytest.fixture
def connect(imap_port: int, mailbox) -> Iterator[Callable[..., imaplib.IMAP4]]:  # type: ignore[no-untyped-def]
    """Logged-in imaplib clients; all are logged out at the end."""
    clients: list[imaplib.IMAP4] = []

    def make(login: bool = True) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", imap_port, timeout=20)
        clients.append(client)
        if login:
            client.login(mailbox.address, PASSWORD)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            client.logout()


@pytest.fixture
def raw(imap_port: int, mailbox) -> RawIMAP:  # type: ignore[no-untyped-def]
    """A RawIMAP client logged in as ``mailbox``."""
    client = RawIMAP(imap_port)
    client.login(mailbox.address, PASSWORD)
    return client


@pytest.fixture
def other(imap_port: int, mailbox) -> RawIMAP:  # type: ignore[no-untyped-def]
    """A second RawIMAP session of ``mailbox``, for changes made elsewhere."""
    client = RawIMAP(imap_port)
    client.login(mailbox.address, PASSWORD)
    return client
