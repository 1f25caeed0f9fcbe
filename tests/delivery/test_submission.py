"""Submission (587 STARTTLS, 465 implicit TLS) over real sockets with smtplib,
then the queue run as the workers run it, to a receiver on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess

import pytest

from apps.delivery import submission
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.directory import services as directory
from tests import fakedns
from tests.conftest import require_program
from tests.delivery.conftest import publish_domain, run_queue
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import make_message, stored


def letter(sender: str, to: str, subject: str = "hello") -> bytes:
    return make_message(to, subject=subject).replace(
        b"From: sender@remote.example", f"From: Alice <{sender}>".encode())


@pytest.fixture
def alice(transactional_db):
    return make_mailbox("alice@example.org")


@pytest.fixture
def submission_port(mail_servers) -> int:
    return mail_servers.port("submission")


@pytest.fixture
def smtps_port(mail_servers) -> int:
    return mail_servers.port("smtps")


def login_starttls(port: int, context, user: str = "alice@example.org") -> smtplib.SMTP:
    client = smtplib.SMTP("localhost", port)
    client.ehlo("client.test")
    client.starttls(context=context)
    client.ehlo("client.test")
    client.login(user, PASSWORD)
    return client


def test_starttls_submission_delivers_locally_and_signs_for_remote(
        submission_port, alice, receiver, client_tls_context):
    make_mailbox("bob@example.org")
    publish_domain("example.org")
    message = letter("alice@example.org", "bob@example.org, carol@example.net")
    with login_starttls(submission_port, client_tls_context) as client:
        refused = client.sendmail("alice@example.org", ["bob@example.org", "carol@example.net"],
                                  message)
    assert refused == {}
    # The local recipient has it before any worker ran, with the trace header.
    (local,) = stored("bob@example.org")
    assert b"with ESMTPSA id" in local and local.endswith(message)
    # The remote one is queued durably: a row and a blob.
    (entry,) = QueueEntry.objects.all()
    assert entry.recipient == "carol@example.net" and entry.attempts == 0

    assert run_queue() == 1
    (got,) = receiver.script.messages
    assert got.mail_from == "alice@example.org" and got.recipients == ["carol@example.net"]
    assert got.tls, "STARTTLS is used whenever the receiver offers it"
    assert got.data.startswith(b"Received: ")
    # RFC 6376: both signatures (RSA and RFC 8463's Ed25519) verify against
    # the keys that `dnsrecords` publishes, and fail once the body changes.
    unfolded = got.data.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    assert unfolded.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in unfolded and b"a=ed25519-sha256" in unfolded
    assert unfolded.count(b"c=relaxed/relaxed") == 2
    tampered = got.data.replace(b"Hi!", b"Ho!")
    for index in (0, 1):
        assert fakedns.dkim_verifies(got.data, index)
        assert not fakedns.dkim_verifies(tampered, index)
    assert not QueueEntry.objects.exists() and not OutboundMessage.objects.exists()


def test_implicit_tls_offers_auth_and_submits(smtps_port, alice, receiver, client_tls_context):
    with smtplib.SMTP_SSL("localhost", smtps_port, context=client_tls_context) as client:
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"].upper()
        assert not client.has_extn("starttls")
        client.login("alice@example.org", PASSWORD)
        client.sendmail("alice@example.org", ["dave@example.net"],
                        letter("alice@example.org", "dave@example.net"))
    run_queue()
    (got,) = receiver.script.messages
    assert got.recipients == ["dave@example.net"]


def test_auth_login_mechanism(submission_port, alice, client_tls_context):
    with smtplib.SMTP("localhost", submission_port) as client:
        client.starttls(context=client_tls_context)
        client.ehlo("client.test")
        client.user, client.password = "alice@example.org", PASSWORD
        code, text = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
    assert code == 235 and text.startswith(b"2.7.0")


def test_mail_without_auth_is_refused(submission_port, alice):
    with smtplib.SMTP("127.0.0.1", submission_port) as client:
        client.ehlo("client.test")
        code, text = client.mail("alice@example.org")
    assert code == 530 and text.startswith(b"5.7.0")


def test_wrong_password_then_lockout(submission_port, alice, settings, client_tls_context):
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    with smtplib.SMTP("localhost", submission_port) as client:
        client.starttls(context=client_tls_context)
        client.ehlo("client.test")
        for _ in range(3):
            with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
                client.login("alice@example.org", "wrong password")
            assert failure.value.smtp_code == 535
            assert failure.value.smtp_error.startswith(b"5.7.8")
        # Locked out: the right password no longer works for a while.
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice@example.org", PASSWORD)


def test_auth_needs_tls_from_a_non_loopback_peer(submission_port, alice, settings,
                                                 client_tls_context):
    # Loopback peers may authenticate in clear text unless this is off; with it
    # off, the listener behaves as it does for every other address.
    settings.MAILHOST_PLAINTEXT_AUTH_LOOPBACK = False
    with smtplib.SMTP("localhost", submission_port) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHg=")
        assert code == 538 and text.startswith(b"5.7.11")
        client.starttls(context=client_tls_context)
        client.ehlo("client.test")
        assert client.has_extn("auth")
        client.login("alice@example.org", PASSWORD)


def test_envelope_sender_of_someone_else_is_refused(submission_port, alice, client_tls_context):
    make_mailbox("mallory@example.org")
    with login_starttls(submission_port, client_tls_context, "mallory@example.org") as client:
        code, text = client.mail("alice@example.org")
        assert code == 553 and text.startswith(b"5.7.1")
        code, text = client.mail("ceo@bank.example")
        assert code == 553 and text.startswith(b"5.7.1")


def test_from_header_of_someone_else_is_refused(submission_port, alice, client_tls_context):
    make_mailbox("bob@example.org")
    with login_starttls(submission_port, client_tls_context) as client, \
            pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        letter("bob@example.org", "bob@example.org"))
    assert refused.value.smtp_code == 553
    assert refused.value.smtp_error.startswith(b"5.7.1")
    assert stored("bob@example.org") == []


def test_alias_and_administered_domain_are_allowed_senders(
        submission_port, alice, receiver, client_tls_context):
    directory.create_alias("sales@example.org", ["alice@example.org"])
    directory.create_domain("shop.example")
    alice.user.administered_domains.add(directory.Domain.objects.get(name="shop.example"))
    with login_starttls(submission_port, client_tls_context) as client:
        for sender in ("sales@example.org", "alice+news@example.org", "noreply@shop.example"):
            refused = client.sendmail(sender, ["x@example.net"], letter(sender, "x@example.net"))
            assert refused == {}
    run_queue()
    assert [m.mail_from for m in receiver.script.messages] == [
        "sales@example.org", "alice+news@example.org", "noreply@shop.example"]


def test_missing_message_id_and_date_are_added(submission_port, alice, client_tls_context):
    make_mailbox("bob@example.org")
    bare = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    with login_starttls(submission_port, client_tls_context) as client:
        client.sendmail("alice@example.org", ["bob@example.org"], bare)
    (got,) = stored("bob@example.org")
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert parsed["Message-ID"].endswith("@mail.mailhost.test>")
    assert parsed["Date"]


def test_recipient_limit(submission_port, alice, settings, client_tls_context):
    settings.MAILHOST_SUBMISSION_MAX_RECIPIENTS = 2
    with login_starttls(submission_port, client_tls_context) as client:
        client.mail("alice@example.org")
        assert client.rcpt("a@example.net")[0] == 250
        assert client.rcpt("b@example.net")[0] == 250
        code, text = client.rcpt("c@example.net")
    assert code == 452 and text.startswith(b"4.5.3")


def test_size_limit(submission_port, alice, settings, client_tls_context):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE = 20_000
    make_mailbox("bob@example.org")
    with login_starttls(submission_port, client_tls_context) as client:
        assert int(client.esmtp_features["size"]) == 20_000
        code, text = client.mail("alice@example.org", ["SIZE=50000"])
        assert code == 552 and text.startswith(b"5.3.4")
        # A client that declares nothing is stopped at the end of DATA.
        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        code, text = client.data(letter("alice@example.org", "bob@example.org")
                                 + (b"x" * 70 + b"\r\n") * 500)
    assert code == 552 and text.startswith(b"5.3.4")
    assert stored("bob@example.org") == []


def test_messages_per_hour_limit(submission_port, alice, settings, client_tls_context):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 2
    make_mailbox("bob@example.org")
    with login_starttls(submission_port, client_tls_context) as client:
        for _ in range(2):
            client.sendmail("alice@example.org", ["bob@example.org"],
                            letter("alice@example.org", "bob@example.org"))
        code, text = client.mail("alice@example.org")
    assert code == 450 and text.startswith(b"4.7.1")
    assert len(stored("bob@example.org")) == 2


def test_unknown_local_recipient_is_refused_at_rcpt(submission_port, alice, client_tls_context):
    with login_starttls(submission_port, client_tls_context) as client:
        client.mail("alice@example.org")
        code, text = client.rcpt("nobody@example.org")
    assert code == 550 and text.startswith(b"5.1.1")


def test_dsn_parameters_are_advertised_and_validated(submission_port, alice, client_tls_context):
    with login_starttls(submission_port, client_tls_context) as client:
        assert client.has_extn("dsn")
        code, text = client.mail("alice@example.org", ["RET=BODY"])
        assert code == 501 and text.startswith(b"5.5.4")
        code, _ = client.mail("alice@example.org", ["RET=HDRS", "ENVID=QQ+2Bx"])
        assert code == 250
        code, text = client.rcpt("x@example.net", ["NOTIFY=NEVER,SUCCESS"])
        assert code == 501
        code, _ = client.rcpt("x@example.net", ["NOTIFY=FAILURE,DELAY",
                                                "ORCPT=rfc822;X+2Btag@example.net"])
        assert code == 250
        code, _ = client.data(letter("alice@example.org", "x@example.net"))
        assert code == 250
    message = OutboundMessage.objects.get()
    assert (message.ret, message.envid) == ("HDRS", "QQ+x")
    entry = message.entries.get()
    assert (entry.notify, entry.orcpt) == ("FAILURE,DELAY", "rfc822;X+tag@example.net")


def test_swaks_submits_over_starttls(submission_port, alice, receiver):
    swaks = require_program("swaks")
    result = subprocess.run(
        [swaks, "--server", "127.0.0.1", "--port", str(submission_port), "--tls",
         "--auth", "PLAIN", "--auth-user", "alice@example.org", "--auth-password", PASSWORD,
         "--from", "alice@example.org", "--to", "eve@example.net",
         "--header", "From: alice@example.org", "--body", "sent by swaks"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK id=" in result.stdout
    run_queue()
    (got,) = receiver.script.messages
    assert got.recipients == ["eve@example.net"] and b"sent by swaks" in got.data


def test_a_message_refused_at_the_end_of_data_is_not_counted_against_the_hour(
        submission_port, alice, settings, client_tls_context):
    # The message is counted while it is being handed over, and given back
    # when the hand-over refuses it (here the recipient's quota, checked on
    # the real size after DATA: no SIZE= was declared at MAIL).
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 1
    make_mailbox("bob@example.org", quota=1000)
    make_mailbox("carol@example.org")
    with login_starttls(submission_port, client_tls_context) as client:
        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        code, _ = client.data(letter("alice@example.org", "bob@example.org")
                              + (b"x" * 70 + b"\r\n") * 50)
        assert code // 100 in (4, 5)
        refused = client.sendmail("alice@example.org", ["carol@example.org"],
                                  letter("alice@example.org", "carol@example.org"))
        assert refused == {}
        code, text = client.mail("alice@example.org")
    assert code == 450 and text.startswith(b"4.7.1")
    assert stored("bob@example.org") == []
    assert len(stored("carol@example.org")) == 1


def test_a_line_over_998_octets_is_reencoded_before_signing(
        submission_port, alice, receiver, client_tls_context):
    # RFC 5322 §2.1.1: the 5,000-octet line goes out as quoted-printable, so the
    # next server neither refuses nor wraps it and the signature still holds.
    long_line = "Ünïcödé " * 500 + "end"
    assert len(long_line.encode()) > 5000
    body = f"First line.\r\n{long_line}\r\nLast line.\r\n"
    message = letter("alice@example.org", "carol@example.net").replace(
        b"Hi!\r\n", body.encode())
    publish_domain("example.org")
    with login_starttls(submission_port, client_tls_context) as client:
        client.sendmail("alice@example.org", ["carol@example.net"], message)
    run_queue()
    (got,) = receiver.script.messages
    assert max(len(line) for line in got.data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content().replace("\r\n", "\n") == body.replace("\r\n", "\n")
    for index in (0, 1):
        assert fakedns.dkim_verifies(got.data, index)


def test_pipelined_recipients_are_each_answered_in_turn(
        submission_port, alice, settings, client_tls_context, monkeypatch):
    """RFC 2920: MAIL, its RCPTs and DATA sent as one group. The listener
    resolves the recipients together with MAIL (no lookup of its own per RCPT),
    and each still gets its own reply, in order, with the recipient limit
    counted as they come; a disabled mailbox is refused."""
    settings.MAILHOST_SUBMISSION_MAX_RECIPIENTS = 3
    looked_up: list[str] = []
    one_by_one = submission.acheck_recipient

    async def counted(address, **kwargs):
        looked_up.append(address)
        return await one_by_one(address, **kwargs)

    monkeypatch.setattr(submission, "acheck_recipient", counted)
    make_mailbox("bob@example.org")
    directory.update_mailbox(make_mailbox("carol@example.org"), active=False)
    recipients = ["nobody@example.org", "bob@example.org", "carol@example.org",
                  "dave@example.net", "erin@example.net", "frank@example.net"]
    with login_starttls(submission_port, client_tls_context) as client:
        client.send(b"MAIL FROM:<alice@example.org>\r\n"
                    + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients)
                    + b"DATA\r\n")
        assert client.getreply()[0] == 250
        answers = [client.getreply() for _ in recipients]
        assert client.getreply()[0] == 354
        client.send(letter("alice@example.org", "bob@example.org") + b".\r\n")
        assert client.getreply()[0] == 250
    codes = [(code, text[:5]) for code, text in answers]
    assert codes == [(550, b"5.1.1"), (250, b"2.1.5"), (550, b"5.2.1"), (250, b"2.1.5"),
                     (250, b"2.1.5"), (452, b"4.5.3")]
    # Only the one past the limit was not resolved with MAIL, and it is
    # refused before any lookup.
    assert looked_up == ["frank@example.net"]
    assert len(stored("bob@example.org")) == 1
    assert sorted(QueueEntry.objects.values_list("recipient", flat=True)) == [
        "dave@example.net", "erin@example.net"]
