"""Per-user learning over IMAP: a user who MOVEs mail into Junk with imaplib
teaches his own model, which weighs in once it has learnt
MAILHOST_BAYES_USER_MIN_MESSAGES messages; the next similar message is then
junked for him, and only for him."""

import imaplib
import smtplib

import pytest

from apps.antispam import learning
from tests.antispam.conftest import message
from tests.antispam.test_learning import LOTTERY, train_global
from tests.factories import PASSWORD, make_mailbox
from tests.smtp.helpers import stored

pytestmark = pytest.mark.django_db(transaction=True)


def send(port: int, recipient: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.sender.example")
        client.sendmail("alice@sender.example", [recipient],
                        message(subject=subject, body=LOTTERY))


def move_inbox_to_junk(port: int, address: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        assert client.login(address, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.uid("MOVE", "1:*", "Junk")  # RFC 6851
        assert typ == "OK", data
    finally:
        client.logout()


def test_imap_move_into_junk_teaches_that_users_model_only(mail_servers, zone, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the store hook's training task runs at once
    settings.MAILHOST_BAYES_USER_MIN_MESSAGES = 8
    smtp, imap = mail_servers.port("smtp"), mail_servers.port("imap")
    train_global()
    bob = make_mailbox("bob@example.org")
    make_mailbox("carol@example.org")

    for n in range(4):
        send(smtp, "bob@example.org", f"You won {n}")
    move_inbox_to_junk(imap, "bob@example.org")
    model = learning.user_model(bob.pk)
    assert (model.spam_count, model.ham_count) == (4, 0)
    # Four of his own are not enough to outvote the site's model yet.
    send(smtp, "bob@example.org", "You won 4")
    assert len(stored("bob@example.org")) == 1

    for n in range(5, 8):
        send(smtp, "bob@example.org", f"You won {n}")
    move_inbox_to_junk(imap, "bob@example.org")  # eight learnt now
    send(smtp, "bob@example.org", "You won again")
    assert stored("bob@example.org") == []
    junked = stored("bob@example.org", "Junk")
    assert len(junked) == 9
    assert b"X-Spam-Status: Yes," in junked[-1]
    # The words that decided it travel with the message, for the webmail.
    assert b"\r\nX-Spam-Clues: " in junked[-1] and b"subject:won=0.9" in junked[-1]

    # Carol taught nothing: the same message is hers to read.
    send(smtp, "carol@example.org", "You won again")
    (inbox,) = stored("carol@example.org")
    assert b"X-Spam-Status: No," in inbox

