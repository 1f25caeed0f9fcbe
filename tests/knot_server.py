"""Knot DNS (Debian's ``knot``, tests/setup-clients.sh installs it) as the
authoritative primary of a throwaway zone: its own configuration, zone file,
TSIG key and control socket in a temporary directory, listening on 127.0.0.1
at a free port (never the system's configuration or port 53)."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

KEY_NAME = "mailhost-update."
ALGORITHM = "hmac-sha256"


def _free_port() -> int:
    # Knot listens on UDP and TCP: a port free for both.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class KnotServer:
    def __init__(self, directory: Path, zone: str, knotd: str, *,
                 records: tuple[str, ...] = ()) -> None:
        self.directory, self.zone = directory, zone
        self.port = _free_port()
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        (directory / f"{zone}.zone").write_text("\n".join([
            f"$ORIGIN {zone}.", "$TTL 300",
            f"@ SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300",
            f"@ NS ns.{zone}.", "ns A 127.0.0.1", *records, ""]))
        (directory / "knot.conf").write_text(f"""\
server:
    rundir: "{directory}"
    listen: 127.0.0.1@{self.port}
database:
    storage: "{directory}"
control:
    listen: "{directory}/knot.sock"
log:
  - target: stderr
    any: info
key:
  - id: {KEY_NAME}
    algorithm: {ALGORITHM}
    secret: {self.secret}
acl:
  - id: mailhost
    key: {KEY_NAME}
    action: [update, transfer]
zone:
  - domain: {zone}
    storage: "{directory}"
    file: "{zone}.zone"
    acl: mailhost
    zonefile-sync: -1
    journal-content: changes
""")
        self.log = (directory / "knotd.log").open("wb")
        self.process = subprocess.Popen([knotd, "-c", str(directory / "knot.conf")],
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "LC_ALL": "C"})
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.query(zone, "SOA"):
                    break
            except (dns.exception.DNSException, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("knotd did not start:\n" + self.output())
            time.sleep(0.1)

    @property
    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(KEY_NAME, self.secret, ALGORITHM)

    def output(self) -> str:
        return (self.directory / "knotd.log").read_text(errors="replace")

    def query(self, name: str, rdtype: str) -> list[str]:
        """The records at ``name`` in zone-file syntax, as the server answers."""
        response = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1",
                                 port=self.port, timeout=5)
        return sorted(rdata.to_text() for rrset in response.answer
                      if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rdata in rrset)

    def edit(self, *, delete: tuple[str, str] | None = None,
             add: tuple[str, str, str] | None = None) -> None:
        """A change by hand, as nsupdate makes it: outside Mailhost."""
        update = dns.update.UpdateMessage(self.zone, keyring=self.key)
        if delete:
            update.delete(*delete)
        if add:
            update.add(add[0], 300, add[1], add[2])
        response = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
