"""ManageSieve (RFC 5804) over real sockets: Debian's sieve-connect uploads
and activates a script over STARTTLS, then mail sent over SMTP lands where
the script says; the protocol's own answers on a raw socket."""

from __future__ import annotations

import base64
import imaplib
import os
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.delivery import srs
from apps.delivery.models import OutboundMessage
from apps.mailservers.tls import certificate_paths
from apps.sieve.models import SieveScript
from tests.conftest import ServerThread, require_program
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import make_message

FILTER = """require ["fileinto", "imap4flags", "envelope", "subaddress", "variables"];
# Reports go to their own folder, read and flagged.
if header :contains "subject" "report" {
    fileinto :flags ["\\\\Seen", "\\\\Flagged", "$report"] "Reports";
    stop;
}
if envelope :detail "to" "lists" {
    fileinto "Lists";
}
"""


@pytest.fixture
def servers(transactional_db) -> Iterator[ServerThread]:
    server = ServerThread(["smtp", "imap", "managesieve"]).start()
    yield server
    server.stop()


@pytest.fixture
def alice(transactional_db):
    return make_mailbox("alice@sieve.example")


def sieve_connect(port: int, *args: str, script: Path | None = None,
                  user: str = "alice@sieve.example") -> subprocess.CompletedProcess:
    """sieve-connect against our listener: STARTTLS with our certificate as
    the trusted CA, SASL PLAIN, the password on a file descriptor."""
    read, write = os.pipe()
    os.write(write, PASSWORD.encode() + b"\n")
    os.close(write)
    cert, _key = certificate_paths()
    command = [require_program("sieve-connect"), "--server", "localhost", "--port", str(port),
               "--user", user, "--passwordfd", str(read),
               "--authmech", "PLAIN", "--tlscafile", str(cert), *args]
    if script is not None:
        command += ["--localsieve", str(script)]
    try:
        return subprocess.run(command, pass_fds=(read,), capture_output=True, text=True,
                              timeout=60, check=False)
    finally:
        os.close(read)


def folder_messages(port: int, folder: str) -> list[tuple[bytes, bytes]]:
    """(flags, subject line) of each message in ``folder``, read over IMAP."""
    with imaplib.IMAP4("127.0.0.1", port) as imap:
        imap.login("alice@sieve.example", PASSWORD)
        status, _ = imap.select(f'"{folder}"', readonly=True)
        assert status == "OK", folder
        _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return [(item[0], item[1].strip()) for item in data if isinstance(item, tuple)]


def test_sieve_connect_uploads_activates_and_the_script_files_mail(servers, alice, tmp_path):
    port = servers.port("managesieve")
    # A bad script is refused with the line at fault, and not stored.
    bad = tmp_path / "bad.siv"
    bad.write_text('require "fileinto";\nif true {\n  fileinto "x"\n}\n')
    upload = sieve_connect(port, "--upload", "--remotesieve", "bad", script=bad)
    assert upload.returncode != 0
    assert "line 4: expected ';' or a block, found '}'" in upload.stdout + upload.stderr
    assert not SieveScript.objects.exists()

    script = tmp_path / "filter.siv"
    script.write_text(FILTER)
    upload = sieve_connect(port, "--upload", "--remotesieve", "main", script=script)
    assert upload.returncode == 0, upload.stderr + upload.stdout
    activate = sieve_connect(port, "--activate", "--remotesieve", "main")
    assert activate.returncode == 0, activate.stderr + activate.stdout
    listing = sieve_connect(port, "--list")
    assert listing.returncode == 0 and "main" in listing.stdout
    assert "active" in listing.stdout.lower() or "*" in listing.stdout
    download = tmp_path / "back.siv"
    fetched = sieve_connect(port, "--download", "--remotesieve", "main", script=download)
    assert fetched.returncode == 0, fetched.stderr
    assert download.read_text().replace("\r\n", "\n") == FILTER

    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("bob@remote.example", ["alice@sieve.example"],
                      make_message("alice@sieve.example", subject="Weekly report"))
        smtp.sendmail("bob@remote.example", ["alice+lists@sieve.example"],
                      make_message("alice+lists@sieve.example", subject="list post"))
        smtp.sendmail("bob@remote.example", ["alice@sieve.example"],
                      make_message("alice@sieve.example", subject="hello"))
    imap_port = servers.port("imap")
    (report,) = folder_messages(imap_port, "Reports")
    assert b"Subject: Weekly report" in report[1]
    for flag in (b"\\Seen", b"\\Flagged", b"$report"):
        assert flag in report[0]
    (listed,) = folder_messages(imap_port, "Lists")
    assert b"list post" in listed[1]
    # fileinto cancels the implicit keep (RFC 5228 §4.1): only "hello" is in INBOX.
    inbox = folder_messages(imap_port, "INBOX")
    assert [subject for _, subject in inbox] == [b"Subject: hello"]


class Wire:
    """A raw ManageSieve client: send bytes, read the response up to OK/NO/BYE."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.response()

    def response(self) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line.startswith((b"OK", b"NO", b"BYE")):
                return lines

    def send(self, data: bytes) -> list[bytes]:
        self.sock.sendall(data)
        return self.response()

    def starttls(self) -> list[bytes]:
        assert self.send(b"STARTTLS\r\n")[-1].startswith(b"OK")
        context = ssl.create_default_context(cafile=str(certificate_paths()[0]))
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        return self.response()


def plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


def test_protocol_answers_on_a_raw_socket(servers, alice, settings):
    settings.MAILHOST_PLAINTEXT_AUTH_LOOPBACK = False
    wire = Wire(servers.port("managesieve"))
    greeting = b"".join(wire.greeting)
    assert b'"IMPLEMENTATION" "Mailhost"' in greeting and b'"STARTTLS"' in greeting
    assert b'"SIEVE" "fileinto envelope imap4flags' in greeting
    # RFC 5804 §2.1: no password before TLS.
    answer = wire.send(b'AUTHENTICATE "PLAIN" "' + plain("alice@sieve.example", PASSWORD)
                       + b'"\r\n')
    assert answer[-1].startswith(b"NO (ENCRYPT-NEEDED)")
    assert wire.send(b"LISTSCRIPTS\r\n")[-1].startswith(b"NO")
    capabilities = b"".join(wire.starttls())
    assert b'"SASL" "PLAIN"' in capabilities and b"STARTTLS" not in capabilities
    # Wrong password, then SASL with the empty challenge and a literal answer.
    answer = wire.send(b'AUTHENTICATE "PLAIN" "' + plain("alice@sieve.example", "nope")
                       + b'"\r\n')
    assert answer[-1].startswith(b"NO (AUTH)")
    wire.sock.sendall(b'AUTHENTICATE "PLAIN"\r\n')
    assert wire.file.readline() == b'""\r\n'  # RFC 5804 §2.1: the empty challenge
    token = plain("alice@sieve.example", PASSWORD)
    answer = wire.send(b"{%d+}\r\n" % len(token) + token + b"\r\n")
    assert answer[-1].startswith(b"OK"), answer

    script = b'require "fileinto";\r\nfileinto "Archive";\r\n'
    assert wire.send(b'HAVESPACE "a" %d\r\n' % len(script))[-1].startswith(b"OK")
    assert wire.send(b'HAVESPACE "a" 99999999\r\n')[-1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert wire.send(b'CHECKSCRIPT {%d+}\r\n' % len(script) + script + b"\r\n")[-1] \
        .startswith(b"OK")
    answer = wire.send(b'CHECKSCRIPT "keep;\r\n')  # a quoted string holds no line break
    assert answer[-1].startswith(b"NO")
    answer = wire.send(b'CHECKSCRIPT {13+}\r\nkeep;\r\nstop\r\n\r\n')
    assert answer[-1] == b'NO "line 2: expected \';\' or a block, found the end of the script"\r\n'
    assert wire.send(b'PUTSCRIPT "a b" {%d+}\r\n' % len(script) + script + b"\r\n")[-1] \
        .startswith(b"OK")
    assert wire.send(b'PUTSCRIPT "other" "keep;"\r\n')[-1].startswith(b"OK")
    assert wire.send(b'SETACTIVE "missing"\r\n')[-1].startswith(b"NO (NONEXISTENT)")
    assert wire.send(b'SETACTIVE "a b"\r\n')[-1].startswith(b"OK")
    assert wire.send(b"LISTSCRIPTS\r\n") == [b'"a b" ACTIVE\r\n', b'"other"\r\n',
                                              b'OK "listscripts completed"\r\n']
    assert wire.send(b'GETSCRIPT "a b"\r\n') == [
        b"{%d}\r\n" % len(script), b'require "fileinto";\r\n', b'fileinto "Archive";\r\n',
        b"\r\n", b'OK "getscript completed"\r\n']
    assert wire.send(b'DELETESCRIPT "a b"\r\n')[-1].startswith(b"NO (ACTIVE)")
    assert wire.send(b'RENAMESCRIPT "a b" "other"\r\n')[-1].startswith(b"NO (ALREADYEXISTS)")
    assert wire.send(b'RENAMESCRIPT "a b" "main \\"1\\""\r\n')[-1].startswith(b"OK")
    assert wire.send(b"LISTSCRIPTS\r\n")[0] == b'"main \\"1\\"" ACTIVE\r\n'
    assert wire.send(b'SETACTIVE ""\r\n')[-1].startswith(b"OK")
    assert wire.send(b'DELETESCRIPT "other"\r\n')[-1].startswith(b"OK")
    assert wire.send(b'NOOP "t1"\r\n') == [b'OK (TAG "t1") "done"\r\n']
    assert wire.send(b"FROB\r\n")[-1].startswith(b"NO")
    assert wire.send(b"UNAUTHENTICATE\r\n")[-1].startswith(b"OK")
    assert wire.send(b"LISTSCRIPTS\r\n")[-1].startswith(b"NO")
    assert wire.send(b"LOGOUT\r\n")[-1].startswith(b"OK")
    assert wire.file.readline() == b""  # closed
    # A literal over the size limit is refused before its octets are read.
    settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE = 100
    wire = Wire(servers.port("managesieve"))
    assert wire.send(b'PUTSCRIPT "big" {1000000000+}\r\n' + b"x" * 4096)[-1].startswith(
        b"BYE (QUOTA/MAXSIZE)")
    assert wire.file.readline() == b""
    assert sorted(SieveScript.objects.values_list("name", "active")) == [('main "1"', False)]


def test_redirect_reaches_a_sink_through_the_queue_and_vacation_answers_once(
        servers, alice, settings):
    sink = Receiver(None).start()
    settings.MAILHOST_TRANSPORTS = f"example.net=127.0.0.1:{sink.port},*=127.0.0.1:{sink.port}"
    settings.MAILHOST_QUEUE_KICK = False
    SieveScript.objects.create(mailbox=alice, name="s", active=True, content="""
require ["vacation", "copy"];
if address :is "from" "boss@example.net" { redirect :copy "phone@example.net"; }
vacation :days 2 :subject "Away" "Back on Monday.";
""")
    try:
        with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=30) as smtp:
            for subject in ("one", "two"):
                message = make_message("alice@sieve.example", subject=subject).replace(
                    b"From: sender@remote.example", b"From: boss@example.net")
                smtp.sendmail("boss@example.net", ["alice@sieve.example"], message)
        queued = OutboundMessage.objects.order_by("pk")
        # Two redirects (the original envelope sender, SRS-rewritten for our
        # domain so it passes SPF where it goes) and one vacation reply.
        senders = sorted(m.sender for m in queued)
        assert senders[0] == ""
        assert all(s.startswith("SRS0=") and s.endswith("@sieve.example") for s in senders[1:])
        assert [srs.reverse(s) for s in senders[1:]] == ["boss@example.net"] * 2
        run_queue()
        got = {r.recipients[0]: [] for r in sink.script.messages}
        for received in sink.script.messages:
            got[received.recipients[0]].append(received)
        assert len(got["phone@example.net"]) == 2
        assert b"X-Sieve-Redirected-By: alice@sieve.example" in got["phone@example.net"][0].data
        (reply,) = got["boss@example.net"]
        assert b"Subject: Away" in reply.data and b"Back on Monday." in reply.data
        assert b"Auto-Submitted: auto-replied" in reply.data
    finally:
        sink.stop()
    # The copies stayed in INBOX (redirect :copy, RFC 3894).
    assert len(folder_messages(servers.port("imap"), "INBOX")) == 2
