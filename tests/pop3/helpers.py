from __future__ import annotations

import poplib

from apps.directory.models import Mailbox
from apps.pop3.protocol import to_crlf
from apps.store import services as store
from tests.conftest import CORPORA
from tests.factories import PASSWORD
from tests.smtp.helpers import make_message


def fill(mailbox: Mailbox, messages: list[bytes]) -> None:
    for data in messages:
        store.deliver([mailbox], data)


def login(client: poplib.POP3, mailbox: Mailbox, password: str = PASSWORD) -> bytes:
    client.user(mailbox.address)
    return client.pass_(password)


def sample_messages(address: str) -> list[bytes]:
    """A plain message, one with lines that begin with dots, and one stored
    with bare LF line ends, 8-bit bytes and no final line end."""
    return [
        make_message(address, subject="first", body="plain"),
        make_message(address, subject="dots", body=".leading dot\r\n..two\r\n.\r\nend"),
        b"From: x@remote.example\nSubject: bare LF and 8-bit\n\ncaf\xe9 \xff\n.dot\nno end",
    ]


def retrieved(client: poplib.POP3, number: int) -> tuple[bytes, int]:
    """RETR as a client sees it: the message with CRLF line ends, and the
    octet count poplib measured."""
    _, lines, octets = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines), octets


def corpus_messages(count: int) -> list[bytes]:
    """Real mail from the ham corpus, as it is sent over SMTP: the mbox
    'From ' line dropped, CRLF line ends."""
    messages = []
    for path in sorted((CORPORA / "ham").iterdir())[:count]:
        data = path.read_bytes()
        if data.startswith(b"From "):
            data = data.split(b"\n", 1)[1]
        messages.append(to_crlf(data))
    return messages
