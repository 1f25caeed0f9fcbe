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
from apps.sieve import services as sieve
from tests import fakedns
from tests.delivery.conftest import run_queue
from tests.delivery.receiver import Receiver
from tests.delivery.tls_peers import DOMAIN, MX_HOST, LocalCA
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import RawSMTP, make_message, stored

BODY_LINE = b"The secret is in the body."


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
def enforced(sts) -> None:
    """example.net: MX mx.example.net, an MTA-STS policy in enforce mode listing it."""
    sts("enforce")


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


def test_delivered_to_a_validated_mx_that_offers_requiretls(enforced, settings, capable):
    settings.MAILHOST_DELIVERY_PORT = capable.port
    before = len(capable.script.messages)
    _send(require_tls=True)
    run_queue()
    assert not QueueEntry.objects.exists()
    got = capable.script.messages[before]
    assert got.tls and "REQUIRETLS" in got.mail_options  # RFC 8689 §4.2.1, last step
    assert stored("alice@example.org") == []  # no report


def test_a_server_without_requiretls_gets_nothing_and_the_sender_a_report(
        enforced, settings, incapable):
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


def test_a_server_without_tls_gets_nothing(enforced, settings, cleartext):
    settings.MAILHOST_DELIVERY_PORT = cleartext.port
    before = len(cleartext.script.messages)
    _send(require_tls=True)
    run_queue()
    assert len(cleartext.script.messages) == before
    assert b"Status: 5.7.10" in _report()


def test_an_mx_no_policy_validates_gets_nothing(enforced, settings, capable, sts):
    settings.MAILHOST_DELIVERY_PORT = capable.port
    # A policy (no DNSSEC here) that does not list the MX host.
    fakedns.ZONE[fakedns.key(f"_mta-sts.{DOMAIN}", "TXT")] = ["v=STSv1; id=elsewhere"]
    sts("testing", mx="*.elsewhere.example")
    before = len(capable.script.messages)
    _send(require_tls=True)
    run_queue()
    assert len(capable.script.messages) == before
    report = _report()
    assert b"Status: 5.7.10" in report and b"MTA-STS" in report


def test_the_same_servers_take_mail_without_requiretls(enforced, settings, incapable):
    settings.MAILHOST_DELIVERY_PORT = incapable.port
    before = len(incapable.script.messages)
    _send(require_tls=False)
    run_queue()
    got = incapable.script.messages[before]
    assert got.tls and "REQUIRETLS" not in got.mail_options


def test_tls_required_no_ignores_the_recipients_policy(enforced, settings, cleartext):
    # Enforce mode would keep this in the queue (tests/delivery/test_mtasts.py);
    # RFC 8689 §4.2.2: the sender asked that the policy be ignored.
    settings.MAILHOST_DELIVERY_PORT = cleartext.port
    before = len(cleartext.script.messages)
    _send(require_tls=False, extra_header=b"TLS-Required: No\r\n")
    run_queue()
    assert not QueueEntry.objects.exists()
    got = cleartext.script.messages[before]
    assert not got.tls and b"TLS-Required: No" in got.data


def test_requiretls_outweighs_a_tls_required_no_header(enforced, settings, cleartext):
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


@pytest.mark.parametrize("checks", [True, False], ids=["spooled", "filed-at-once"])
def test_a_sieve_redirect_keeps_requiretls(
        transactional_db, mail_servers, settings, client_tls_context, checks):
    settings.MAILHOST_ANTISPAM = checks
    alice = make_mailbox("alice@example.org")
    sieve.put_script(alice, "away", 'require "copy"; redirect :copy "friend@example.net";')
    sieve.set_active(alice, "away")
    with smtplib.SMTP("localhost", mail_servers.port("smtp")) as client:
        client.starttls(context=client_tls_context)
        client.ehlo("client.test")
        client.sendmail("someone@remote.example", ["alice@example.org"],
                        make_message("alice@example.org"), mail_options=["REQUIRETLS"])
        client.sendmail("someone@remote.example", ["alice@example.org"],
                        make_message("alice@example.org"))
    # RFC 8689 §6: the redirected copy of the first asks for TLS, of the second not.
    assert sorted(OutboundMessage.objects.values_list("require_tls", flat=True)) == [
        False, True]


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
