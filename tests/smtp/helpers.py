from __future__ import annotations

import socket
import uuid

from apps.store import filed
from apps.store.models import Message


def make_message(to: str, *, size: int = 0, subject: str = "hello", body: str = "Hi!") -> bytes:
    message_id = f"<{uuid.uuid4().hex}@test.example>"
    padding = ("x" * 76 + "\r\n") * (size // 78) if size else ""
    return (
        f"From: sender@remote.example\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"{body}\r\n{padding}"
    ).encode()


def stored(address: str, folder: str = "INBOX") -> list[bytes]:
    """The bytes of each message in a folder, in UID order."""
    return [filed.message_bytes(sha, bytes(added), at) for sha, added, at in Message.objects
            .filter(folder__mailbox__address=address, folder__name=folder).order_by("uid")
            .values_list("blob_id", "added_headers", "added_at")]


class RawSMTP:
    """A byte-level SMTP client, for what smtplib will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    def command(self, line: bytes) -> list[bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()
