"""REQUIRETLS (RFC 8689): accepted on the MX and on submission only under
TLS and kept with the queued message; on delivery, only to an MX host that
example.net's MTA-STS policy validates, over TLS with a certificate from the
test CA, to a server that offers REQUIRETLS, else a report with 5.7.30 or
5.7.10; and "TLS-Required: No" the other way. Real receivers (aiosmtpd with
and without STARTTLS and REQUIRETLS), the real listeners, the fake DNS."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from apps.delivery.models import OutboundMessage, QueueEntry
from apps.delivery.services import RecipientSpec, submit
from apps.directory import services as directory
from tests import fakedns
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.delivery.test_mtasts import DOMAIN, MX_HOST, LocalCA, PolicyServer
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import RawSMTP, make_message, stored

BODY_LINE = b"The secret is in the body."


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def policy_server(ca: LocalCA) -> Iterator[PolicyServer]:
    server = PolicyServer(ca.server_context(f"mta-sts.{DOMAIN}"))
    yield server
    server.stop()


def _receiver(context, *, requiretls: bool) -> Iterator[Receiver]:
    server = Receiver(context)
    server.script.requiretls = requiretls
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capable(ca: LocalCA) -> Iterator[Receiver]:
    """mx.example.net with a certificate from the test CA, offering REQUIRETLS."""
    yield from _receiver(ca.server_context(MX_HOST), requiretls=True)


@pytest.fixture(scope="module")
def incapable(ca: LocalCA) -> Iterator[Receiver]:
    """The same, without REQUIRETLS."""
    yield from _receiver(ca.server_context(MX_HOST), requiretls=False)


@pytest.fixture(scope="module")
def cleartext() -> Iterator[Receiver]:
    """No STARTTLS at all (REQUIRETLS would be offered under TLS)."""
    yield from _receiver(None, requiretls=True)


@pytest.fixture
def sts(settings, ca: LocalCA, policy_server: PolicyServer, db):
    """example.net: MX mx.example.net, an MTA-STS policy in enforce mode listing it."""
    settings.MAILHOST_TRANSPORTS = ""
    settings.MAILHOST_MTA_STS_CA_FILE = str(ca.path)
    settings.MAILHOST_MTA_STS_FETCH_PORT = policy_server.port
    fakedns.publish([f"{DOMAIN}. 3600 IN MX 10 {MX_HOST}.",
                     f"{MX_HOST}. 3600 IN A 127.0.0.1",
                     f"mta-sts.{DOMAIN}. 3600 IN A 127.0.0.1",
                     f'_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=requiretls"'])
    policy_server.policy = (f"version: STSv1\r\nmode: enforce\r\nmx: {MX_HOST}\r\n"
                            "max_age: 86400\r\n").encode()
    make_mailbox("alice@example.org")


def _message(extra_header: bytes = b"") -> bytes:
    data = make_message(f"carol@{DOMAIN}", body=BODY_LINE.decode())
    return extra_header + data.replace(b"From: sender@remote.example",
                                       b"From: alice@example.org")


def _send(*, require_tls: bool, extra_header: bytes = b"") -> None:
    submit(sender="alice@example.org", recipients=[RecipientSpec(f"carol@{DOMAIN}")],
           data=_message(extra_header), require_tls=require_tls)


def _report() -> bytes:
    """The one report in alice's INBOX."""
    (report,) = stored("alice@example.org")
    return report


def test_delivered_to_a_validated_mx_that_offers_requiretls(sts, settings, capable):
    settings.MAILHOST_DELIVERY_PORT = capable.port
    before = len(capable.script.messages)
    _send(require_tls=True)
    run_queue()
    assert not QueueEntry.objects.exists()
    got = capable.script.messages[before]
    assert got.tls and "REQUIRETLS" in got.mail_options  # RFC 8689 §4.2.1, last step
    assert stored("alice@example.org") == []  # no report


def test_a_server_without_requiretls_gets_nothing_and_the_sender_a_report(
        sts, settings, incapable):
    settings.MAILHOST_DELIVERY_PORT = incapable.port
    before = len(incapable.script.messages)
    _send(require_tls=True)
    run_queue()
    assert not QueueEntry.objects.exists()  # a permanent failure: no retry
    assert len(incapable.script.messages) == before
    report = _report()
    assert b"Action: failed" in report and b"Status: 5.7.30" in report
    # RFC 8689 §5: the report returns the header only (as RET=HDRS).
    assert b"Subject: hello" in report and BODY_LINE not in report


def test_a_server_without_tls_gets_nothing(sts, settings, cleartext):
    settings.MAILHOST_DELIVERY_PORT = cleartext.port
    before = len(cleartext.script.messages)
    _send(require_tls=True)
    run_queue()
    assert len(cleartext.script.messages) == before
    assert b"Status: 5.7.10" in _report()


def test_an_mx_no_policy_validates_gets_nothing(sts, settings, capable, policy_server):
    settings.MAILHOST_DELIVERY_PORT = capable.port
    # A policy (no DNSSEC here) that does not list the MX host.
    fakedns.ZONE[fakedns.key(f"_mta-sts.{DOMAIN}", "TXT")] = ["v=STSv1; id=elsewhere"]
    policy_server.policy = (b"version: STSv1\r\nmode: testing\r\nmx: *.elsewhere.example\r\n"
                            b"max_age: 86400\r\n")
    before = len(capable.script.messages)
    _send(require_tls=True)
    run_queue()
    assert len(capable.script.messages) == before
    report = _report()
    assert b"Status: 5.7.10" in report and b"MTA-STS" in report


def test_the_same_servers_take_mail_without_requiretls(sts, settings, incapable):
    settings.MAILHOST_DELIVERY_PORT = incapable.port
    before = len(incapable.script.messages)
    _send(require_tls=False)
    run_queue()
    got = incapable.script.messages[before]
    assert got.tls and "REQUIRETLS" not in got.mail_options


def test_tls_required_no_ignores_the_recipients_policy(sts, settings, cleartext):
    # Enforce mode would keep this in the queue (tests/delivery/test_mtasts.py);
    # RFC 8689 §4.2.2: the sender asked that the policy be ignored.
    settings.MAILHOST_DELIVERY_PORT = cleartext.port
    before = len(cleartext.script.messages)
    _send(require_tls=False, extra_header=b"TLS-Required: No\r\n")
    run_queue()
    assert not QueueEntry.objects.exists()
    got = cleartext.script.messages[before]
    assert not got.tls and b"TLS-Required: No" in got.data


def test_requiretls_outweighs_a_tls_required_no_header(sts, settings, cleartext):
    settings.MAILHOST_DELIVERY_PORT = cleartext.port
    before = len(cleartext.script.messages)
    _send(require_tls=True, extra_header=b"TLS-Required: No\r\n")  # RFC 8689 §4.1
    run_queue()
    assert len(cleartext.script.messages) == before
    assert b"Status: 5.7.10" in _report()


# --- inbound -----------------------------------------------------------------------


def test_the_mx_offers_and_takes_requiretls_only_under_tls(
        transactional_db, mail_servers, receiver, client_tls_context):
    make_mailbox("alice@example.org")
    directory.create_alias("fwd@example.org", ["friend@example.net"])
    port = mail_servers.port("smtp")
    clear = RawSMTP(port)
    assert b"250-REQUIRETLS" not in b"\n".join(clear.command(b"EHLO client.test"))
    reply = clear.command(b"MAIL FROM:<someone@remote.example> REQUIRETLS")
    assert reply[-1].startswith(b"530 5.7.10")
    clear.close()
    with smtplib.SMTP("localhost", port) as client:
        client.starttls(context=client_tls_context)
        client.ehlo("client.test")
        assert client.has_extn("requiretls")
        assert client.mail("someone@remote.example", ["REQUIRETLS=yes"])[0] == 501
        client.rset()
        refused = client.sendmail("someone@remote.example", ["fwd@example.org"],
                                  make_message("fwd@example.org"), mail_options=["REQUIRETLS"])
        assert refused == {}
    # RFC 8689 §4.1: the forwarded copy keeps the tag.
    assert OutboundMessage.objects.get().require_tls


def test_submission_keeps_requiretls_with_the_queued_message(
        transactional_db, mail_servers, client_tls_context):
    make_mailbox("alice@example.org")
    with smtplib.SMTP_SSL("localhost", mail_servers.port("smtps"),
                          context=client_tls_context) as client:
        client.ehlo("client.test")
        assert client.has_extn("requiretls")
        client.login("alice@example.org", PASSWORD)
        client.sendmail("alice@example.org", [f"carol@{DOMAIN}"], _message(),
                        mail_options=["REQUIRETLS"])
        client.sendmail("alice@example.org", [f"dave@{DOMAIN}"], _message())
    tagged = dict(OutboundMessage.objects.values_list("entries__recipient", "require_tls"))
    assert tagged == {f"carol@{DOMAIN}": True, f"dave@{DOMAIN}": False}
