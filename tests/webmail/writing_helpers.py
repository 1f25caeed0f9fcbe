"""Shared by the writing side's tests: a signed-in client, messages put into a
mailbox as delivery would, and what a folder holds."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from django.test import Client

from apps.directory.models import Mailbox
from apps.store import services as store
from apps.store.models import Message
from tests.smtp.helpers import stored


def signed_in(client: Client, mailbox: Mailbox) -> Client:
    client.force_login(mailbox.user)
    return client


def deliver(mailbox: Mailbox, data: bytes, folder: str = "INBOX") -> Message:
    (message,) = store.deliver([mailbox], data, folder=folder)
    return message


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def folder(address: str, name: str) -> list[EmailMessage]:
    return [parsed(data) for data in stored(address, name)]


def text_of(message: EmailMessage) -> str:
    """The text part with its line breaks as Python writes them."""
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")
