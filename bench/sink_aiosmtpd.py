"""The reference for bench/smtp_ingest.py: a bare aiosmtpd server that writes
each message to its own file and fsyncs it before answering 250 — the floor of
what an aiosmtpd-based server that keeps mail durable can do on this machine."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from aiosmtpd.smtp import SMTP


class FsyncSink:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    async def handle_DATA(self, server, session, envelope) -> str:
        path = os.path.join(self.directory, uuid.uuid4().hex)

        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, envelope.original_content)
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.get_running_loop().run_in_executor(None, write)
        return "250 OK"


async def main(directory: str) -> None:
    handler = FsyncSink(directory)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, decode_data=False, enable_SMTPUTF8=True), "127.0.0.1", 0)
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
