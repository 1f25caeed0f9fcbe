"""Training: idempotent per message, relabelled on the way out of Junk, and
driven by the store's move/copy hook (so IMAP MOVE trains without knowing)."""

import hashlib
import smtplib

import pytest

from apps.antispam import bayes, learning, services
from apps.antispam.auth import SpfResult
from apps.antispam.models import BayesToken, TrainedMessage
from apps.store import services as store
from apps.store.models import Message
from tests.antispam.conftest import message
from tests.factories import make_mailbox
from tests.smtp.helpers import stored

pytestmark = pytest.mark.django_db(transaction=True)


def labelled(data: bytes) -> learning.LabelledMessage:
    return learning.LabelledMessage(hashlib.sha256(data).hexdigest(),
                                    frozenset(bayes.tokenize(data)))


def test_training_is_idempotent_and_relabels():
    model = learning.global_model()
    spam = labelled(message(subject="Cheap pills"))
    assert learning.train(model, [spam, spam], is_spam=True) == 1
    assert learning.train(model, [spam], is_spam=True) == 0
    model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (1, 0)
    assert BayesToken.objects.get(model=model, token="subject:cheap").spam_count == 1

    assert learning.train(model, [spam], is_spam=False) == 1  # a correction
    model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (0, 1)
    token = BayesToken.objects.get(model=model, token="subject:cheap")
    assert (token.spam_count, token.ham_count) == (0, 1)
    assert TrainedMessage.objects.get(model=model).is_spam is False


def deliver(mailbox, subject: str, body: str) -> None:
    facts = services.SmtpFacts("192.0.2.1", "mx.sender.example", "a@sender.example",
                               SpfResult("none", "", "sender.example"))
    pk = services.spool_message(message(subject=subject, body=body), [mailbox.pk], facts)
    services.file_spooled(pk)


def train_global() -> None:
    model = learning.global_model()
    learning.train(model, [labelled(message(subject=f"pills {i}", body="cheap pills online"))
                           for i in range(5)], is_spam=True)
    learning.train(model, [labelled(message(subject=f"minutes {i}", body="meeting agenda"))
                           for i in range(5)], is_spam=False)


LOTTERY = "Congratulations winner, claim your lottery prize transfer fee"


def test_moving_into_and_out_of_junk_changes_the_users_next_verdicts(settings, zone):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the hook's training task runs at once
    settings.MAILHOST_BAYES_USER_MIN_MESSAGES = 5  # his five moves are enough
    train_global()
    bob = make_mailbox("bob@example.org")
    for n in range(5):
        deliver(bob, f"You won {n}", LOTTERY)
    assert len(stored("bob@example.org")) == 5  # unknown words: not judged spam

    inbox, junk = store.get_folder(bob, "INBOX"), store.get_folder(bob, "Junk")
    store.move(inbox, list(Message.objects.filter(folder=inbox).values_list("uid", flat=True)),
               junk)
    deliver(bob, "You won again", LOTTERY)
    assert len(stored("bob@example.org", "Junk")) == 6
    assert stored("bob@example.org") == []
    # Another user's verdicts are not his to change.
    carol = make_mailbox("carol@example.org")
    deliver(carol, "You won again", LOTTERY)
    assert len(stored("carol@example.org")) == 1

    # Out of Junk: learnt as ham instead (unlearnt as spam first).
    uids = list(Message.objects.filter(folder=junk).values_list("uid", flat=True))
    store.move(junk, uids, inbox)
    model = learning.user_model(bob.pk)
    model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (0, 6)
    deliver(bob, "You won once more", LOTTERY)
    assert len(stored("bob@example.org")) == 7


def test_copy_into_junk_trains_and_moving_to_trash_does_not(settings, zone):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    bob = make_mailbox("bob@example.org")
    deliver(bob, "hello", "some words here")
    inbox, junk, trash = (store.get_folder(bob, name) for name in ("INBOX", "Junk", "Trash"))
    store.copy(inbox, [1], junk)
    model = learning.user_model(bob.pk)
    model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (1, 0)
    store.move(junk, [1], trash)  # deleting spam is not calling it ham
    model.refresh_from_db()
    assert (model.spam_count, model.ham_count) == (1, 0)


def test_training_in_another_process_weighs_on_the_listeners_next_verdict(
        listener_process, monkeypatch, tmp_path):
    """The listener keeps the counts in memory: what another process learns
    after it has loaded them still changes its next verdict."""
    zone_file = tmp_path / "zone.json"
    zone_file.write_text("{}")
    monkeypatch.setenv("MAILHOST_FAKE_DNS", str(zone_file))
    monkeypatch.setenv("MAILHOST_ANTISPAM_INLINE", "1")  # checked and filed before the 250
    train_global()
    make_mailbox("bob@example.org")
    listener = listener_process(["smtp"])

    def send(subject: str) -> None:
        with smtplib.SMTP("127.0.0.1", listener.ports["smtp"], timeout=30) as client:
            client.ehlo("mx.sender.example")
            client.sendmail("alice@sender.example", ["bob@example.org"],
                            message(subject=subject, body=LOTTERY))

    send("You won")
    assert len(stored("bob@example.org")) == 1  # unknown words: not judged spam
    # This test's process is not the listener's: the listener learns of it
    # only from the database.
    learning.train(learning.global_model(),
                   [labelled(message(subject=f"You won {i}", body=LOTTERY)) for i in range(5)],
                   is_spam=True)
    send("You won again")
    assert len(stored("bob@example.org", "Junk")) == 1
    assert len(stored("bob@example.org")) == 1


def test_a_users_verdict_is_the_one_on_the_summed_counts(settings):
    """What the worker's in-memory scoring gives (the global counts looked up
    once, the user's added) is the classifier's verdict on the counts of both
    models summed, for the global model and for the user."""
    settings.MAILHOST_BAYES_STARTER = False
    settings.MAILHOST_BAYES_USER_MIN_MESSAGES = 2
    train_global()
    mailbox = make_mailbox("bob@example.org")
    user = learning.user_model(mailbox.pk)
    learning.train(user, [labelled(message(subject="lottery", body=LOTTERY)),
                          labelled(message(subject="agenda", body="pills agenda"))],
                   is_spam=True)
    tokens = bayes.tokenize(message(subject="pills", body=f"{LOTTERY} meeting agenda"))
    both: dict[str, list[int]] = {}
    only_global: dict[str, bayes.Counts] = {}
    for token in BayesToken.objects.select_related("model"):
        summed = both.setdefault(token.token, [0, 0])
        summed[0] += token.spam_count
        summed[1] += token.ham_count
        if token.model.mailbox_id is None:
            only_global[token.token] = bayes.Counts(token.spam_count, token.ham_count)
    scores = learning.classify_tokens(tokens, [mailbox.pk])
    assert scores[None] == bayes.score(tokens, only_global, 5, 5)
    assert scores[mailbox.pk] == bayes.score(
        tokens, {token: bayes.Counts(*pair) for token, pair in both.items()}, 7, 5)
    assert scores[mailbox.pk].probability > scores[None].probability
