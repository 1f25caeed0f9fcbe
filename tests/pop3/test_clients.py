"""Real POP3 clients (Debian's fetchmail and getmail6) download a 200-message
mailbox delivered over SMTP, once keeping the mail on the server and once
deleting it; what they got must be what was delivered."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
from pathlib import Path

import pytest

from apps.mailservers.tls import certificate_paths
from apps.pop3.protocol import to_crlf
from tests.conftest import require_program
from tests.factories import PASSWORD
from tests.pop3.helpers import corpus_messages
from tests.smtp.helpers import stored

pytestmark = pytest.mark.slow

COUNT = 200


@pytest.fixture
def delivered(pop_servers, mailbox) -> list[bytes]:
    """200 corpus messages sent to the real SMTP listener; returns the stored
    bytes (our Received header on top of what was sent)."""
    with smtplib.SMTP("127.0.0.1", pop_servers.port("smtp"), timeout=30) as client:
        for data in corpus_messages(COUNT):
            client.sendmail("sender@remote.example", [mailbox.address], data)
    messages = stored(mailbox.address)
    assert len(messages) == COUNT
    return messages


def split_message(message: bytes, dropped: tuple[bytes, ...]) -> tuple[list[bytes], bytes]:
    """(header fields unfolded with white space collapsed, body bytes), leaving
    out the ``dropped`` fields. Clients may re-fold long header lines (getmail
    does), which changes no field's value (RFC 5322 §2.2.3)."""
    header, _, body = to_crlf(message).partition(b"\r\n\r\n")
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", header)
    fields = [b" ".join(line.split()) for line in unfolded.split(b"\r\n")]
    return [f for f in fields if f.split(b":", 1)[0].lower() not in dropped], body


def assert_same_mail(received: list[bytes], delivered: list[bytes], *,
                     dropped: tuple[bytes, ...] = ()) -> None:
    """Each delivered message arrived exactly once: the same body, byte for
    byte (line ends aside), and the same header fields, under which a client
    may add its own trace fields (fetchmail a Received, getmail a Return-Path,
    which replaces the one it finds: that one is left out, as ``dropped``)."""
    assert len(received) == len(delivered)
    remaining = [split_message(d, dropped) for d in delivered]
    body_bytes = 0
    for data in received:
        fields, body = split_message(data, dropped)
        match = next((i for i, (want_fields, want_body) in enumerate(remaining)
                      if body == want_body and fields[-len(want_fields):] == want_fields),
                     None)
        assert match is not None, data[:500]
        added = fields[:len(fields) - len(remaining[match][0])]
        assert len(added) <= 2, added
        body_bytes += len(body)
        del remaining[match]
    assert body_bytes == sum(len(to_crlf(d).partition(b"\r\n\r\n")[2]) for d in delivered)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False,
                            **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_maildir(path: Path) -> list[bytes]:
    return [f.read_bytes() for sub in ("new", "cur") for f in sorted((path / sub).iterdir())]


def fetchmail(tmp_path: Path, port: int, address: str, *, keep: bool, round: str) -> list[bytes]:
    """fetchmail over STLS (certificate checked against the name "localhost" that
    the test certificate carries), handing each message to an MDA
    that writes it into a Maildir."""
    maildir = tmp_path / f"fetchmail-{round}"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    mda = tmp_path / "mda.sh"
    mda.write_text(f'#!/bin/sh\ncat > "$(mktemp -p {maildir}/new msg.XXXXXXXX)"\n')
    mda.chmod(0o755)
    cert, _ = certificate_paths()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 with proto POP3 service {port} timeout 60\n'
        f'  user "{address}" there with password "{PASSWORD}" is root here\n'
        f'  {"keep" if keep else "nokeep"} fetchall no rewrite\n'
        f'  mda "{mda}"\n'
        f'  sslproto "tls1.2+" sslcertck sslcertfile "{cert}" sslcommonname localhost\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, FETCHMAILHOME=str(tmp_path), HOME=str(tmp_path))
    run([require_program("fetchmail"), "--nodetach", "--nosyslog", "-f", str(rc)], env=env)
    return read_maildir(maildir)


def getmail(tmp_path: Path, port: int, address: str, *, delete: bool, round: str) -> list[bytes]:
    """getmail6 over implicit TLS (certificate checked), delivering into a Maildir
    through an external MDA.

    getmail forks a child for every delivery and loses the child's exit when
    the child is done before the parent starts waiting (getmail6/getmail6#226,
    "waiting child pid timed out"); a loaded machine makes that likely. The MDA
    therefore waits a moment before it writes. An external MDA also lets root
    (CI) deliver, which getmail's own Maildir writer refuses."""
    maildir = tmp_path / f"getmail-{round}"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    cert, _ = certificate_paths()
    script = f'sleep 0.05; cat > "$(mktemp -p {maildir}/new msg.XXXXXXXX)"'
    rc = tmp_path / f"getmailrc-{round}"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {port}\nusername = {address}\npassword = {PASSWORD}\n"
        f"ca_certs = {cert}\n"
        "[destination]\ntype = MDA_external\npath = /bin/sh\n"
        f"arguments = (\"-c\", {script!r})\n"
        "allow_root_commands = true\nunixfrom = false\n"
        "[options]\nread_all = true\ndelivered_to = false\nreceived = false\n"
        f"delete = {'true' if delete else 'false'}\n"
    )
    run([require_program("getmail"), "--rcfile", str(rc), "--getmaildir", str(tmp_path)])
    return read_maildir(maildir)


def test_fetchmail_keeps_then_deletes(pop_servers, mailbox, delivered, tmp_path) -> None:
    port = pop_servers.port("pop3")
    kept = fetchmail(tmp_path, port, mailbox.address, keep=True, round="keep")
    assert_same_mail(kept, delivered)
    # fetchmail passes the message through untouched under its Received line.
    assert all(any(to_crlf(got).endswith(sent) for sent in delivered) for got in kept)
    assert stored(mailbox.address) == delivered
    taken = fetchmail(tmp_path, port, mailbox.address, keep=False, round="delete")
    assert_same_mail(taken, delivered)
    assert stored(mailbox.address) == []


def test_getmail_keeps_then_deletes(pop_servers, mailbox, delivered, tmp_path) -> None:
    port = pop_servers.port("pop3s")
    kept = getmail(tmp_path, port, mailbox.address, delete=False, round="keep")
    assert_same_mail(kept, delivered, dropped=(b"return-path",))
    assert stored(mailbox.address) == delivered
    taken = getmail(tmp_path, port, mailbox.address, delete=True, round="delete")
    assert_same_mail(taken, delivered, dropped=(b"return-path",))
    assert stored(mailbox.address) == []
