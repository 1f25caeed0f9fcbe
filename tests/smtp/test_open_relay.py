"""The open relay suite: address tricks that try to get mail for someone
outside through our MX without authentication, or out through submission in
someone else's name. Over raw sockets, so that every byte is the attacker's.

A trick may end in local delivery (the hosted domain in another spelling is
still ours) or in a refusal; it never puts anything on the outbound queue,
except through an alias its owner pointed outside (forwarding), and that is
counted against the sender's message rate."""

from __future__ import annotations

import base64

import pytest

from apps.delivery.models import QueueEntry
from apps.directory import services as directory
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import RawSMTP, stored

# Each: the RCPT TO argument an outsider tries on the MX.
MX_TRICKS = {
    "plain outside address": "<victim@evil.test>",
    "percent hack": "<victim%evil.test@ours.example>",
    "percent hack, two hops": "<victim%evil.test%ours.example@ours.example>",
    "bang path": "<evil.test!victim@ours.example>",
    "bang path, two hops": "<ours.example!evil.test!victim@ours.example>",
    "source route through us": "<@ours.example:victim@evil.test>",
    "source route, two hops": "<@ours.example,@mx.ours.example:victim@evil.test>",
    "quoted local part with @": '<"victim@evil.test"@ours.example>',
    "quoted local part with %": '<"victim%evil.test"@ours.example>',
    "quoted, outside domain": '<"alice@ours.example"@evil.test>',
    "IP literal": "<victim@[127.0.0.1]>",
    "IPv6 literal": "<victim@[IPv6:::1]>",
    "percent hack to an IP literal": "<victim%[127.0.0.1]@ours.example>",
    "trailing dot, outside domain": "<victim@evil.test.>",
    "trailing dot, hosted domain": "<alice@ours.example.>",
    "two @": "<victim@evil.test@ours.example>",
    "two @, ours last": "<victim@ours.example@evil.test>",
    "hosted domain as a prefix": "<victim@ours.example.evil.test>",
    "hosted domain as a suffix label": "<victim@evil-ours.example>",
    "mixed case outside domain": "<Victim@EVIL.Test>",
    "IDNA outside domain": "<victim@évil.test>",
    "punycode outside domain": "<victim@xn--vil-bma.test>",
    "fullwidth at sign": "<victim\uff20evil.test@ours.example>",
    "backslash-escaped at sign": "<victim\\@evil.test@ours.example>",
    "unclosed angle bracket": "<victim@evil.test",
    "no angle brackets": "victim@evil.test",
}


@pytest.fixture
def hosted(transactional_db, settings):
    settings.MAILHOST_RATE_LIMIT_EXEMPT = []
    make_mailbox("alice@ours.example")
    make_mailbox("bob@ours.example")
    make_mailbox("hans@bücher.example")


def _queued() -> list[str]:
    return list(QueueEntry.objects.values_list("recipient", flat=True))


def _mx_attempt(port: int, mail_from: str, rcpt: str) -> tuple[bytes, bytes | None]:
    """(the RCPT reply, the DATA reply if the RCPT was taken)."""
    client = RawSMTP(port)
    try:
        client.command(b"EHLO attacker.test")
        assert client.command(f"MAIL FROM:{mail_from}".encode())[0].startswith(b"250")
        rcpt_reply = client.command(f"RCPT TO:{rcpt}".encode())[-1]
        if not rcpt_reply.startswith(b"250"):
            return rcpt_reply, None
        client.command(b"DATA")
        return rcpt_reply, client.command(
            b"From: attacker@evil.test\r\nSubject: relay test\r\n\r\nspam\r\n.")[-1]
    finally:
        client.close()


@pytest.mark.parametrize("trick", list(MX_TRICKS))
def test_the_mx_relays_for_nobody(smtp_port, hosted, trick):
    rcpt_reply, data_reply = _mx_attempt(smtp_port, "<attacker@evil.test>", MX_TRICKS[trick])
    assert rcpt_reply[:1] == b"5", rcpt_reply
    assert data_reply is None
    assert _queued() == []


@pytest.mark.parametrize("mail_from", ["<>", "<alice@ours.example>", "<@ours.example:x@y.test>"])
def test_no_sender_opens_the_relay(smtp_port, hosted, mail_from):
    """The null sender (bounces) and a forged local sender get no further."""
    rcpt_reply, _ = _mx_attempt(smtp_port, mail_from, "<victim@evil.test>")
    assert rcpt_reply.startswith(b"550 5.7.1")
    assert _queued() == []


@pytest.mark.parametrize("rcpt", [
    "<ALICE@OURS.EXAMPLE>", "<@evil.test:alice@ours.example>",
    "<alice+tag@Ours.Example>",
])
def test_other_spellings_of_a_hosted_address_deliver_locally(smtp_port, hosted, rcpt):
    _, data_reply = _mx_attempt(smtp_port, "<someone@remote.test>", rcpt)
    assert data_reply is not None and data_reply.startswith(b"250")
    assert len(stored("alice@ours.example")) == 1
    assert _queued() == []


@pytest.mark.parametrize("rcpt", ["<hans@xn--bcher-kva.example>", "<hans@BÜCHER.example>",
                                  "<HANS@xn--BCHER-KVA.example>"])
def test_idna_forms_of_a_hosted_domain_are_that_domain(smtp_port, hosted, rcpt):
    _, data_reply = _mx_attempt(smtp_port, "<someone@remote.test>", rcpt)
    assert data_reply is not None and data_reply.startswith(b"250")
    assert len(stored("hans@xn--bcher-kva.example")) == 1
    assert _queued() == []


def test_tricks_into_a_catch_all_stay_local(smtp_port, hosted):
    directory.create_alias("@ours.example", ["bob@ours.example"])
    for rcpt in ("<victim%evil.test@ours.example>", "<evil.test!victim@ours.example>"):
        _, data_reply = _mx_attempt(smtp_port, "<someone@remote.test>", rcpt)
        assert data_reply is not None and data_reply.startswith(b"250")
    assert len(stored("bob@ours.example")) == 2
    assert _queued() == []


def test_forwarding_aliases_reach_outside_only_as_forwarding_and_are_rate_limited(
        smtp_port, hosted, settings):
    """An alias chain (with a sub-address) that ends outside forwards to exactly
    its configured destination, and each message counts against the message rate."""
    settings.MAILHOST_RATE_MESSAGES_PER_MINUTE = 2
    directory.create_alias("first@ours.example", ["second@ours.example"])
    directory.create_alias("second@ours.example", ["friend@elsewhere.test"])
    for _ in range(2):
        _, data_reply = _mx_attempt(smtp_port, "<someone@remote.test>",
                                    "<first+tag@ours.example>")
        assert data_reply is not None and data_reply.startswith(b"250")
    assert _queued() == ["friend@elsewhere.test"] * 2
    client = RawSMTP(smtp_port)
    client.command(b"EHLO attacker.test")
    assert client.command(b"MAIL FROM:<someone@remote.test>")[0].startswith(b"450 4.7.1")
    client.close()
    assert len(_queued()) == 2


# --- submission: an authenticated user sending as someone else ----------------------

# MAIL FROM arguments that are not alice's (she may use her address and its sub-addresses).
FOREIGN_SENDERS = {
    "another user": "<bob@ours.example>",
    "another user, mixed case": "<BOB@Ours.Example>",
    "null sender": "<>",
    "same local part elsewhere": "<alice@evil.test>",
    "hosted domain as a prefix": "<alice@ours.example.evil.test>",
    "percent hack": "<bob%ours.example@ours.example>",
    "percent hack with own name": "<alice%evil.test@ours.example>",
    "bang path": "<ours.example!bob@ours.example>",
    "source route to someone else": "<@ours.example:bob@ours.example>",
    "quoted local part with @": '<"bob@ours.example"@ours.example>',
    "quoted own address, outside": '<"alice@ours.example"@evil.test>',
    "IP literal": "<alice@[127.0.0.1]>",
    "two @": "<bob@ours.example@ours.example>",
    "IDNA domain of another user": "<hans@bücher.example>",
}

# From fields of a message sent with MAIL FROM:<alice@ours.example>.
FOREIGN_FROM_FIELDS = {
    "another user": b"From: bob@ours.example\r\n",
    "own and another": b"From: alice@ours.example, bob@ours.example\r\n",
    "own display name, other address": b'From: "alice@ours.example" <bob@ours.example>\r\n',
    "own address in a comment": b"From: bob@ours.example (alice@ours.example)\r\n",
    "encoded display name": b"From: =?utf-8?q?alice=40ours=2Eexample?= <bob@ours.example>\r\n",
    "second From field": b"From: alice@ours.example\r\nFrom: bob@ours.example\r\n",
    "second From field first": b"From: bob@ours.example\r\nFrom: alice@ours.example\r\n",
    "second From field, space before the colon":
        b"From: alice@ours.example\r\nFrom : bob@ours.example\r\n",
    "only From field with a space before the colon": b"From : bob@ours.example\r\n",
    "group": b"From: friends: bob@ours.example;\r\n",
    "outside address": b"From: alice@ours.example.evil.test\r\n",
    "no From at all": b"",
    "folded to hide the address": b"From: Alice\r\n <bob@ours.example>\r\n",
}


def _login(port: int) -> RawSMTP:
    client = RawSMTP(port)
    client.command(b"EHLO client.test")
    token = base64.b64encode(f"\0alice@ours.example\0{PASSWORD}".encode())
    assert client.command(b"AUTH PLAIN " + token)[0].startswith(b"235")
    return client


@pytest.mark.parametrize("trick", list(FOREIGN_SENDERS))
def test_submission_refuses_an_envelope_sender_not_the_users(
        mail_servers, hosted, trick):
    client = _login(mail_servers.port("submission"))
    reply = client.command(f"MAIL FROM:{FOREIGN_SENDERS[trick]}".encode())[-1]
    assert reply[:1] == b"5", reply
    assert client.command(b"RCPT TO:<victim@evil.test>")[0].startswith(b"503")
    client.close()
    assert _queued() == []


@pytest.mark.parametrize("trick", list(FOREIGN_FROM_FIELDS))
def test_submission_refuses_a_from_field_not_the_users(mail_servers, hosted, trick):
    client = _login(mail_servers.port("submission"))
    assert client.command(b"MAIL FROM:<alice@ours.example>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<victim@evil.test>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<bob@ours.example>")[0].startswith(b"250")
    assert client.command(b"DATA")[0].startswith(b"354")
    reply = client.command(FOREIGN_FROM_FIELDS[trick] + b"To: victim@evil.test\r\n"
                           b"Subject: not from me\r\n\r\nhello\r\n.")[-1]
    assert reply[:1] == b"5", reply
    client.close()
    assert _queued() == []
    assert stored("bob@ours.example") == []


def test_submission_without_login_relays_nothing(mail_servers, hosted):
    client = RawSMTP(mail_servers.port("submission"))
    client.command(b"EHLO client.test")
    assert client.command(b"MAIL FROM:<alice@ours.example>")[0].startswith(b"530")
    client.close()
    assert _queued() == []


def test_a_login_on_the_mx_opens_no_relay(smtp_port, hosted):
    """Users' credentials belong on submission; the MX relays for no one."""
    client = RawSMTP(smtp_port)
    client.command(b"EHLO client.test")
    token = base64.b64encode(f"\0alice@ours.example\0{PASSWORD}".encode())
    assert not client.command(b"AUTH PLAIN " + token)[-1].startswith(b"235")
    assert client.command(b"MAIL FROM:<alice@ours.example>")[0].startswith(b"250")
    assert client.command(b"RCPT TO:<victim@evil.test>")[0].startswith(b"550 5.7.1")
    client.close()
    assert _queued() == []
