"""Debian's Postfix as a receiving peer: an instance of its own (config,
queue and mail directories in a fresh temporary directory) on a free port of
127.0.0.1, delivering every address of its domains into one Maildir."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix  - - n 1000? 1 tlsmgr
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file_prefixes = /tmp, /var
maillog_file = {root}/maillog
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
biff = no
# One address that Postfix refuses, for the per-recipient reply tests.
smtpd_recipient_restrictions = check_recipient_access
    inline:{{ {{ refused@{first_domain} = 550 5.1.1 no such user here }} }},
    permit_mynetworks, reject_unauth_destination
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postfix:
    def __init__(self, *, domains: list[str], cert: Path, key: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mh-postfix-", dir="/tmp"))
        self.root.chmod(0o755)  # the daemons run as the postfix user
        self.port = free_port()
        self.config = self.root / "etc"
        self.config.mkdir()
        (self.config / "main.cf").write_text(MAIN_CF.format(
            root=self.root, domains=", ".join(domains), first_domain=domains[0],
            cert=cert, key=key))
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.root / "queue").mkdir(mode=0o755)
        (self.root / "data").mkdir(mode=0o700)
        shutil.chown(self.root / "data", "postfix", "postfix")
        (self.root / "mail" / "inbox").mkdir(parents=True)
        shutil.chown(self.root / "mail", 65534, 65534)
        shutil.chown(self.root / "mail" / "inbox", 65534, 65534)

    def start(self) -> Postfix:
        started = subprocess.run(["postfix", "-c", str(self.config), "start"],
                                 capture_output=True, text=True, timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{started.stdout}{started.stderr}"
                               f"{self.log()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"postfix did not listen:\n{self.log()}")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.config), "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def delivered(self) -> list[bytes]:
        """The messages in the Maildir, oldest first."""
        new = self.root / "mail" / "inbox" / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)]

    def wait_delivered(self, count: int, timeout: float = 30) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.delivered()
