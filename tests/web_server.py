"""The real web server (uvicorn serving mailhost.asgi, as gunicorn's uvicorn
worker does in production) as a separate process on a free port, on the test
database: what a browser test talks to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServerProcess:
    def __init__(self, database_url: str, storage_root: Path, env: dict[str, str] | None = None,
                 ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = dict(os.environ)
        environment.update({
            "DATABASE_URL": database_url,
            "MAILHOST_STORAGE_ROOT": str(storage_root),
            "PYTHONUNBUFFERED": "1",
        })
        environment.update(env or {})
        environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the server keeps Django's guard
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "mailhost.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log", "--lifespan", "off"],
            cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/signin/", timeout=5).close()  # noqa: S310
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "web server did not start:\n" + "".join(self.output)) from error
                time.sleep(0.1)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._drainer.join(5)
        if self.process.stdout:
            self.process.stdout.close()
