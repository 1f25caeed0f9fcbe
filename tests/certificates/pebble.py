"""Debian's pebble (Let's Encrypt's ACME test server) started by a test on
free ports, with a certificate of its own listener made here, validating
http-01 against the given web port and resolving names through the given DNS
server."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

from apps.certificates.storage import generate_self_signed
from tests.conftest import require_program
from tests.web_server import free_port


class Pebble:
    def __init__(self, workdir: Path, *, http_port: int, dns_port: int) -> None:
        self.tls_cert, tls_key = workdir / "pebble-cert.pem", workdir / "pebble-key.pem"
        generate_self_signed(self.tls_cert, tls_key, "localhost")
        self.port, management_port = free_port(), free_port()
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.management = f"https://127.0.0.1:{management_port}"
        config = workdir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(self.tls_cert), "privateKey": str(tls_key),
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="0",
                   # Every order is validated afresh, and no nonce is refused at random.
                   PEBBLE_AUTHZREUSE="0", PEBBLE_WFE_NONCEREJECT="0")
        self.process = subprocess.Popen(
            [require_program("pebble"), "-config", str(config),
             "-dnsserver", f"127.0.0.1:{dns_port}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._get(self.directory)
                break
            except (urllib.error.URLError, ConnectionError) as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("pebble did not start:\n" + "".join(self.output)) from error
                time.sleep(0.05)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace"))

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.tls_cert))
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:  # noqa: S310
            return answer.read()

    def root(self) -> x509.Certificate:
        """Pebble's CA root, made anew at each start."""
        return x509.load_pem_x509_certificate(self._get(f"{self.management}/roots/0"))

    def intermediate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self._get(f"{self.management}/intermediates/0"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self._drainer.join(5)
        if self.process.stdout:
            self.process.stdout.close()
