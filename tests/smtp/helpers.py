from __future__ import annotations

import email
import smtplib
import socket
import threading
import time
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


class Senders:
    """``clients`` threads sending messages to alice until ``stop``; each
    message that got its 250 is in ``acknowledged`` as (Message-ID, bytes).
    With ``reconnect``, a client whose session fails opens another (as a peer
    would); without, it gives up (the server died under it)."""

    def __init__(self, port: int, *, clients: int, size: int = 0,
                 reconnect: bool = False) -> None:
        self.port = port
        self.size = size
        self.reconnect = reconnect
        self.acknowledged: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,))
                         for n in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self, number: int) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                    while not self._stop.is_set():
                        message = make_message("alice@example.org",
                                               subject=f"{number}-{n}", size=self.size)
                        smtp.sendmail("sender@remote.example", ["alice@example.org"],
                                      message)
                        with self._lock:
                            self.acknowledged.append(
                                (email.message_from_bytes(message)["Message-ID"], message))
                        n += 1
            except (smtplib.SMTPException, OSError):
                if not self.reconnect:
                    return
                time.sleep(0.05)

    def wait_for(self, count: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while len(self.acknowledged) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


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


def send_chunked(client: smtplib.SMTP, sender: str, recipient: str, data: bytes, *,
                 binary: bool = False) -> tuple[int, bytes]:
    """One message in one ``BDAT … LAST`` chunk (RFC 3030 §2), which smtplib
    cannot send itself; with ``binary``, as BODY=BINARYMIME (§3). The reply."""
    client.mail(sender, ["BODY=BINARYMIME"] if binary else [])
    client.rcpt(recipient)
    client.send(f"BDAT {len(data)} LAST\r\n".encode() + data)
    return client.getreply()
