"""The day-one model: a new site classifies before anyone runs trainspam,
and what the site learns takes over."""

from pathlib import Path

import pytest

from apps.antispam import bayes, learning, services
from apps.antispam.auth import SpfResult
from apps.antispam.corpus import is_held_out, read_messages
from tests.conftest import CORPORA
from tests.factories import make_mailbox
from tests.smtp.helpers import stored

pytestmark = pytest.mark.django_db(transaction=True)


def held_out(kind: str) -> list[tuple[Path, bytes]]:
    """Corpus messages the starter model was not built from."""
    return [(path, data) for path, data in read_messages(CORPORA / kind)
            if is_held_out(path.name)]


@pytest.fixture
def starter(settings):
    settings.MAILHOST_BAYES_STARTER = True


def verdict(data: bytes) -> bayes.Score:
    result = learning.classify_tokens(bayes.tokenize(data))[None]
    assert result is not None
    return result


def test_a_fresh_site_tells_corpus_spam_from_ham(starter):
    spam, ham = held_out("spam"), held_out("ham")
    assert len(spam) >= 25 and len(ham) >= 90
    caught = [path.name for path, data in spam if verdict(data).is_spam]
    false_alarms = [path.name for path, data in ham if verdict(data).is_spam]
    assert len(caught) >= 0.9 * len(spam), sorted({p.name for p, _ in spam} - set(caught))
    assert false_alarms == []
    assert all(verdict(data).starter for _, data in spam[:3])


def test_without_the_starter_model_nothing_is_judged(settings):
    settings.MAILHOST_BAYES_STARTER = False
    assert learning.classify_tokens(bayes.tokenize(held_out("spam")[0][1]))[None] is None


def spool_and_file(mailbox, data: bytes) -> None:
    facts = services.SmtpFacts(client_ip="192.0.2.10", helo="mx.sender.example",
                               mail_from="someone@sender.example",
                               spf=SpfResult("none", "", "sender.example"))
    assert services.file_spooled(services.spool_message(data, [mailbox.pk], facts))


def test_corpus_spam_lands_in_junk_and_ham_in_inbox_before_any_training(starter, zone):
    bob = make_mailbox("bob@example.org")
    (_, spam), (_, ham) = held_out("spam")[0], held_out("ham")[0]
    spool_and_file(bob, spam)
    spool_and_file(bob, ham)
    (junk,) = stored("bob@example.org", "Junk")
    (inbox,) = stored("bob@example.org")
    # Our verdict fields go in below the first field; the rest is as sent.
    assert junk.endswith(spam.split(b"\r\n", 1)[1])
    assert inbox.endswith(ham.split(b"\r\n", 1)[1])
    for got in (junk, inbox):
        status = got.split(b"X-Spam-Status: ", 1)[1].split(b"\r\n", 1)[0]
        assert b"BAYES_STARTER" in status and b"BAYES_UNTRAINED" not in status


def test_the_sites_own_training_replaces_the_starter(starter, monkeypatch):
    monkeypatch.setattr(learning, "STARTER_RETIRES_AT", 5)
    spam, ham = held_out("spam")[:5], held_out("ham")[:5]
    assert verdict(ham[0][1]).starter and not verdict(ham[0][1]).is_spam
    # The site teaches the opposite of what the starter model thinks.
    model = learning.global_model()
    for messages, is_spam in ((ham, True), (spam, False)):
        learning.train(model, [learning.LabelledMessage(path.name, frozenset(
            bayes.tokenize(data))) for path, data in messages], is_spam=is_spam)
    after = verdict(ham[0][1])
    assert not after.starter and after.is_spam
