"""The resolution cache (resolve runs on every RCPT): answers without a query
while the directory is unchanged, and a directory write is seen at once, also
by a listener in another process."""

from __future__ import annotations

import smtplib

import pytest

from apps.directory import services
from mailhost.errors import Disabled, NotFound
from tests.factories import make_mailbox


def test_a_repeated_resolution_makes_no_query(db, django_assert_num_queries):
    mailbox = make_mailbox("alice@example.org")
    assert services.resolve("alice@example.org").mailboxes == [mailbox]
    with pytest.raises(NotFound):
        services.resolve("nobody@example.org")
    with django_assert_num_queries(0):
        assert services.resolve("alice@example.org").mailboxes == [mailbox]
        with pytest.raises(NotFound):
            services.resolve("nobody@example.org")
        with pytest.raises(NotFound):
            services.resolve("nobody@example.org")


def test_every_kind_of_write_is_seen_at_the_next_resolution(db):
    mailbox = make_mailbox("alice@example.org")
    with pytest.raises(NotFound):
        services.resolve("team@example.org")
    services.create_alias("team@example.org", ["alice@example.org"])
    assert services.resolve("team@example.org").mailboxes == [mailbox]
    services.update_mailbox(mailbox, active=False)
    with pytest.raises(Disabled):
        services.resolve("alice@example.org")
    services.update_mailbox(mailbox, active=True)
    services.update_domain(mailbox.domain, active=False)
    with pytest.raises(Disabled):
        services.resolve("alice@example.org")
    services.update_domain(mailbox.domain, active=True)
    services.delete_mailbox(mailbox)
    with pytest.raises(NotFound):
        services.resolve("alice@example.org")


def test_a_mailbox_disabled_is_refused_at_the_next_rcpt_of_another_process(
        listener_process, monkeypatch):
    monkeypatch.setenv("MAILHOST_LISTENER_PROCESSES", "1")  # one process: its cache is warm
    mailbox = make_mailbox("alice@example.org")
    process = listener_process(["smtp"])
    with smtplib.SMTP("127.0.0.1", process.ports["smtp"], timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@remote.example")
        assert smtp.rcpt("alice@example.org")[0] == 250
        assert smtp.rcpt("alice@example.org")[0] == 250
        services.update_mailbox(mailbox, active=False)
        code, text = smtp.rcpt("alice@example.org")
        assert (code, text[:5]) == (550, b"5.2.1")
        services.update_mailbox(mailbox, active=True)
        assert smtp.rcpt("alice@example.org")[0] == 250
