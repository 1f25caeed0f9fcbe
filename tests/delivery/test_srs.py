"""The Sender Rewriting Scheme: mail forwarded outside leaves with an SRS0
sender of ours that passes SPF at the destination, and bounces to it come back
to the original sender; forged or expired ones are refused at RCPT."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.antispam.auth import check_spf
from apps.delivery import srs
from apps.directory import services as directory
from tests import fakedns
from tests.delivery.conftest import publish_domain, run_queue
from tests.factories import make_mailbox
from tests.smtp.helpers import make_message, stored

DAY = 24 * 3600
NOW = 1_790_000_000.0


# --- the scheme --------------------------------------------------------------------

LOCAL = st.from_regex(r"[a-zA-Z0-9._+=-]{1,30}", fullmatch=True)


@settings(max_examples=40)
@given(LOCAL)
def test_a_rewritten_sender_leads_back_to_it(local):
    rewritten = srs.forward(f"{local}@remote.example", "example.org", now=NOW)
    assert rewritten.startswith("SRS0=") and rewritten.endswith(
        f"=remote.example={local}@example.org")
    assert srs.reverse(rewritten, now=NOW + 3 * DAY) == f"{local}@remote.example"
    # Servers on the way may change the case of the address (libsrs2 allows it).
    assert srs.reverse(rewritten.upper(), now=NOW).lower() == f"{local}@remote.example".lower()


def test_forged_expired_and_foreign_addresses_are_refused(settings):
    rewritten = srs.forward("someone@remote.example", "example.org", now=NOW)
    tag, hash_, rest = rewritten.split("=", 2)
    forged = f"{tag}={'A' if hash_[0] != 'A' else 'B'}{hash_[1:]}={rest}"
    other_sender = rewritten.replace("=someone@", "=victim@")
    for address in (forged, other_sender):
        with pytest.raises(srs.InvalidSrsAddress, match="Invalid"):
            srs.reverse(address, now=NOW)
    settings.MAILHOST_SRS_MAX_AGE_DAYS = 21
    srs.reverse(rewritten, now=NOW + 21 * DAY)
    with pytest.raises(srs.InvalidSrsAddress, match="Expired"):
        srs.reverse(rewritten, now=NOW + 22 * DAY)
    settings.MAILHOST_SRS_SECRET = "another secret"
    with pytest.raises(srs.InvalidSrsAddress):
        srs.reverse(rewritten, now=NOW)


def test_an_old_secret_still_verifies_what_it_signed(settings):
    settings.MAILHOST_SRS_SECRET = "old"
    rewritten = srs.forward("someone@remote.example", "example.org", now=NOW)
    settings.MAILHOST_SRS_SECRET = "new"
    settings.MAILHOST_SRS_OLD_SECRETS = ["old"]
    assert srs.reverse(rewritten, now=NOW) == "someone@remote.example"
    assert srs.forward("someone@remote.example", "example.org", now=NOW) != rewritten


def test_another_forwarders_address_becomes_srs1_and_points_back_to_it():
    theirs = "SRS0=AbCd=XY=remote.example=someone@forwarder.example"
    ours = srs.forward(theirs, "example.org", now=NOW)
    assert ours.startswith("SRS1=") and ours.endswith(
        "=forwarder.example==AbCd=XY=remote.example=someone@example.org")
    assert srs.reverse(ours) == theirs
    # Forwarded once more by a third server, then by us again: still one hop back.
    again = srs.forward(ours.replace("@example.org", "@third.example"), "example.org")
    assert srs.reverse(again) == theirs


def test_which_senders_are_rewritten_and_for_which_domain(db, settings):
    make_mailbox("alice@example.org")
    assert srs.forwarding_sender("<>", "fwd@example.org") == "<>"
    assert srs.forwarding_sender("alice@example.org", "fwd@example.org") == "alice@example.org"
    assert srs.forwarding_sender("bob@remote.example", "fwd@Example.ORG").endswith(
        "=remote.example=bob@example.org")
    settings.MAILHOST_SRS_DOMAIN = "bounces.example.org"
    assert srs.forwarding_sender("bob@remote.example", "fwd@example.org").endswith(
        "=remote.example=bob@bounces.example.org")
    settings.MAILHOST_SRS = False
    assert srs.forwarding_sender("bob@remote.example", "fwd@example.org") == "bob@remote.example"


# --- over SMTP ---------------------------------------------------------------------


@pytest.fixture
def forwarding(transactional_db, receiver, settings):
    """fwd@example.org forwards to carol@example.net; the receiver also takes
    mail for remote.example, where the original senders are."""
    settings.MAILHOST_TRANSPORTS = (f"example.net=127.0.0.1:{receiver.port},"
                                    f"remote.example=127.0.0.1:{receiver.port}")
    make_mailbox("alice@example.org")
    directory.create_alias("fwd@example.org", ["carol@example.net"])
    return receiver


def test_forwarded_mail_passes_spf_and_its_bounce_reaches_the_sender(
        mail_servers, forwarding):
    # Our domain's published records (MX and "v=spf1 mx -all") name this host;
    # the original sender's domain allows only its own server.
    publish_domain("example.org")
    fakedns.publish(["mail.mailhost.test 300 IN A 127.0.0.1",
                     'remote.example 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"'])
    long_line = "word " * 1200
    message = make_message("fwd@example.org", body=long_line)
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        assert client.sendmail("someone@remote.example", ["fwd@example.org"], message) == {}
    run_queue()
    (forwarded,) = forwarding.script.messages
    assert forwarded.recipients == ["carol@example.net"]
    assert forwarded.mail_from.startswith("SRS0=")
    assert forwarded.mail_from.endswith("=remote.example=someone@example.org")
    # At the destination: SPF passes for our domain where the original sender's fails.
    assert check_spf("127.0.0.1", forwarded.mail_from, "mail.mailhost.test").result == "pass"
    assert check_spf("127.0.0.1", "someone@remote.example", "mail.mailhost.test").result == "fail"
    # The 6,000-octet line was re-encoded on the way out (RFC 5322 §2.1.1).
    assert max(len(line) for line in forwarded.data.split(b"\r\n")) <= 998
    body = email.message_from_bytes(forwarded.data, policy=email.policy.default).get_content()
    assert body.replace("\r\n", "\n") == long_line + "\n"

    # The destination bounces: the report comes to our MX for the SRS address
    # and goes on to the original sender, with the null sender kept.
    bounce = make_message(forwarded.mail_from, subject="Undelivered Mail Returned to Sender")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        assert client.sendmail("<>", [forwarded.mail_from], bounce) == {}
    run_queue()
    returned = forwarding.script.messages[1]
    assert returned.recipients == ["someone@remote.example"]
    assert returned.mail_from == "<>"
    assert b"Undelivered Mail Returned to Sender" in returned.data
    assert stored("alice@example.org") == []


def test_forged_and_expired_bounces_are_refused_at_rcpt(mail_servers, forwarding, settings):
    settings.MAILHOST_SRS_MAX_AGE_DAYS = 21
    fresh = srs.forward("someone@remote.example", "example.org")
    expired = srs.forward("someone@remote.example", "example.org",
                          now=time.time() - 30 * DAY)
    forged = fresh.replace("=someone@", "=victim@")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        client.ehlo("bouncer.test")
        client.mail("<>")
        assert client.rcpt(forged) == (550, b"5.1.1 Invalid SRS address <%s>" % forged.encode())
        code, reply = client.rcpt(expired)
        assert code == 550 and reply.startswith(b"5.1.1 Expired SRS address")
        assert client.rcpt(fresh)[0] == 250
        # An SRS-looking address of a domain not ours is no way to relay.
        assert client.rcpt(fresh.replace("@example.org", "@elsewhere.test"))[0] == 550


def test_our_own_report_on_a_forwarded_message_reaches_the_original_sender(
        mail_servers, forwarding):
    forwarding.script.rcpt["carol@example.net"] = ["550 5.1.1 No such user"]
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as client:
        client.sendmail("someone@remote.example", ["fwd@example.org"],
                        make_message("fwd@example.org"))
    run_queue()  # refused: the report goes to the SRS sender, that is to someone
    run_queue()
    (report,) = forwarding.script.messages
    assert report.mail_from == "<>" and report.recipients == ["someone@remote.example"]
    assert b"Status: 5.1.1" in report.data
