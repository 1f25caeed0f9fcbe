from __future__ import annotations

from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest
from django.test import Client

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.store.models import Message
from tests.factories import make_mailbox


def build(subject: str = "Hello", body: str = "Hi there.", *, sender: str = "Ann <ann@far.example>",
          to: str = "bob@here.example", html: str | None = None, **headers: str) -> bytes:
    """A message as a mail client writes it (CRLF line ends, as SMTP wants)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes(policy=policy.SMTP)


@pytest.fixture
def mailbox(db) -> Mailbox:
    return make_mailbox("bob@here.example")


@pytest.fixture
def reader(client: Client, mailbox: Mailbox) -> Client:
    client.force_login(mailbox.user)
    return client


@pytest.fixture
def deliver(mailbox: Mailbox) -> Callable[..., Message]:
    def deliver(data: bytes | None = None, *, folder: str = "INBOX", to: Mailbox | None = None,
                flags: int = 0, **kwargs: str) -> Message:
        return store.deliver([to or mailbox], data if data is not None else build(**kwargs),
                             folder=folder, flags=flags)[0]
    return deliver
