"""HAProxy (Debian's ``haproxy``, see tests/setup-clients.sh) as the TCP load
balancer in front of listeners: one frontend per route on a free port of
127.0.0.1, each passing its connections to a listener port with the PROXY
protocol header (``send-proxy`` or ``send-proxy-v2``), from SOURCE_ADDRESS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.web_server import free_port

# The balancer's own address towards the listeners: not the clients' 127.0.0.1.
SOURCE_ADDRESS = "127.0.0.2"


class PortTaken(RuntimeError):
    """haproxy could not bind a frontend port that was free a moment before."""


@dataclass(frozen=True)
class Route:
    name: str
    to_port: int  # the listener's
    proxy: str  # "send-proxy" (v1) or "send-proxy-v2"


class HAProxy:
    def __init__(self, routes: list[Route], directory: Path) -> None:
        if shutil.which("haproxy", path="/usr/sbin:/usr/bin") is None:
            pytest.fail("haproxy is not installed (tests/setup-clients.sh installs it)")
        # A free port is only free until someone takes it: another test process may
        # bind it before haproxy does. Start again on other ports when that happens.
        for attempt in range(5):
            try:
                self._start(routes, directory)
                return
            except PortTaken:
                if attempt == 4:
                    raise

    def _start(self, routes: list[Route], directory: Path) -> None:
        self.ports = {route.name: free_port() for route in routes}
        lines = ["global", "  maxconn 200", "defaults", "  mode tcp", "  timeout connect 5s",
                 "  timeout client 60s", "  timeout server 60s"]
        for route in routes:
            lines += [f"frontend {route.name}", f"  bind 127.0.0.1:{self.ports[route.name]}",
                      f"  default_backend {route.name}_nodes",
                      f"backend {route.name}_nodes",
                      f"  server node 127.0.0.1:{route.to_port} {route.proxy} "
                      f"source {SOURCE_ADDRESS}"]
        config = directory / "haproxy.cfg"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [shutil.which("haproxy", path="/usr/sbin:/usr/bin") or "haproxy", "-db", "-f",
             str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 30
        for port in self.ports.values():
            while True:
                if self.process.poll() is not None:
                    assert self.process.stderr is not None
                    error = self.process.stderr.read().decode()
                    if "cannot bind" in error:
                        raise PortTaken(error)
                    raise RuntimeError("haproxy died: " + error)
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
