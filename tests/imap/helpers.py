from __future__ import annotations

import contextlib
import re
import socket
import ssl


class RawIMAP:
    """A byte-level IMAP client, for checking exactly what goes over the wire."""

    def __init__(self, port: int, *, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.readline()
        self.counter = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError("closed")
        return line

    def read_response(self) -> bytes:
        """One response line with its literals, as sent."""
        out = self.readline()
        while (match := re.search(rb"\{(\d+)\}\r\n$", out)) is not None:
            out += self.file.read(int(match.group(1)))
            out += self.readline()
        return out

    def command(self, text: bytes | str, tag: str | None = None) -> list[bytes]:
        """Send one command; return every line up to and including the tagged one."""
        if isinstance(text, str):
            text = text.encode()
        self.counter += 1
        tag = tag or f"t{self.counter}"
        self.send(tag.encode() + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.read_response()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def login(self, user: str, password: str) -> list[bytes]:
        return self.command(f'LOGIN "{user}" "{password}"')

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
