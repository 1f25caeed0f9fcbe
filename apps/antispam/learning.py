"""The classifier's memory: token counts per model in the database.

The global model is trained by the operator (``manage.py trainspam``); each
mailbox has its own model, trained when its user moves mail into or out of
Junk. A message is scored on the sum of both, so a user's corrections weigh
on top of the site-wide knowledge. Training is idempotent per message (its
sha256) and a message learnt with the other label is unlearnt first.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F

from apps.antispam import bayes
from apps.antispam.models import BayesModel, BayesToken, TrainedMessage
from apps.store.blobs import get_blob_store
from apps.store.hooks import Transfer
from apps.store.models import SpecialUse

log = logging.getLogger(__name__)

_CHUNK = 500  # bound on query parameters (SQLite) per IN (...)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def global_model() -> BayesModel:
    # Should two be created at once, everyone still uses the first.
    model = BayesModel.objects.filter(mailbox__isnull=True).order_by("pk").first()
    return model or BayesModel.objects.create(mailbox=None)


def user_model(mailbox_id: int) -> BayesModel:
    model, _ = BayesModel.objects.get_or_create(mailbox_id=mailbox_id)
    return model


@dataclass(frozen=True)
class LabelledMessage:
    digest: str
    tokens: frozenset[str]


def train(model: BayesModel, messages: Sequence[LabelledMessage], *, is_spam: bool) -> int:
    """Learn ``messages`` as spam or ham; returns how many were new to the model."""
    with transaction.atomic():
        # One trainer per model at a time: counts are read, then written.
        locked = BayesModel.objects.select_for_update().get(pk=model.pk)
        previous = {}
        digests = [m.digest for m in messages]
        for chunk in _chunks(digests):
            previous.update(TrainedMessage.objects.filter(model=locked, digest__in=chunk)
                            .values_list("digest", "is_spam"))
        spam_delta: Counter[str] = Counter()
        ham_delta: Counter[str] = Counter()
        learnt: list[LabelledMessage] = []
        relabelled: list[str] = []
        seen: set[str] = set()
        for message in messages:
            if message.digest in seen or previous.get(message.digest) == is_spam:
                continue
            seen.add(message.digest)
            gain, loss = (spam_delta, ham_delta) if is_spam else (ham_delta, spam_delta)
            gain.update(message.tokens)
            if message.digest in previous:
                loss.subtract(message.tokens)
                relabelled.append(message.digest)
            learnt.append(message)
        if not learnt:
            return 0
        _apply(locked, spam_delta, ham_delta)
        unlearnt = len(relabelled)
        if is_spam:
            locked.spam_count = F("spam_count") + len(learnt)
            locked.ham_count = F("ham_count") - unlearnt
        else:
            locked.ham_count = F("ham_count") + len(learnt)
            locked.spam_count = F("spam_count") - unlearnt
        locked.save(update_fields=["spam_count", "ham_count"])
        TrainedMessage.objects.filter(model=locked, digest__in=relabelled).update(is_spam=is_spam)
        TrainedMessage.objects.bulk_create(
            [TrainedMessage(model=locked, digest=m.digest, is_spam=is_spam)
             for m in learnt if m.digest not in previous])
    return len(learnt)


def _apply(model: BayesModel, spam_delta: Counter[str], ham_delta: Counter[str]) -> None:
    tokens = sorted(set(spam_delta) | set(ham_delta))
    existing: dict[str, BayesToken] = {}
    for chunk in _chunks(tokens):
        existing.update((t.token, t) for t in BayesToken.objects.filter(
            model=model, token__in=chunk))
    changed, new = [], []
    for token in tokens:
        row = existing.get(token)
        if row is None:
            row = BayesToken(model=model, token=token)
            new.append(row)
        else:
            changed.append(row)
        row.spam_count = max(0, row.spam_count + spam_delta[token])
        row.ham_count = max(0, row.ham_count + ham_delta[token])
    BayesToken.objects.bulk_update(changed, ["spam_count", "ham_count"], batch_size=_CHUNK)
    BayesToken.objects.bulk_create(new, batch_size=_CHUNK)


def classify_tokens(
    tokens: set[str], mailbox_ids: Sequence[int] = (),
) -> dict[int | None, bayes.Score | None]:
    """Scores of one message for the global model (key None) and for each
    mailbox (global plus that user's counts), from one query for the counts;
    None where the model has learnt too little to judge."""
    models = list(BayesModel.objects.filter(mailbox__isnull=True).order_by("pk")[:1])
    glob = models[0] if models else None
    users = {m.mailbox_id: m for m in BayesModel.objects.filter(mailbox_id__in=list(mailbox_ids))}
    models += users.values()
    by_model: dict[int, dict[str, bayes.Counts]] = {m.pk: {} for m in models}
    for chunk in _chunks(sorted(tokens)):
        for model_id, token, spam, ham in BayesToken.objects.filter(
                model__in=models, token__in=chunk).values_list(
                    "model_id", "token", "spam_count", "ham_count"):
            by_model[model_id][token] = bayes.Counts(spam, ham)
    global_counts = by_model[glob.pk] if glob else {}
    base_spam, base_ham = (glob.spam_count, glob.ham_count) if glob else (0, 0)
    scores: dict[int | None, bayes.Score | None] = {
        None: bayes.score(tokens, global_counts, base_spam, base_ham)
        if is_trained(base_spam, base_ham) else None}
    for mailbox_id in mailbox_ids:
        model = users.get(mailbox_id)
        if model is None or model.spam_count + model.ham_count == 0:
            scores[mailbox_id] = scores[None]
            continue
        zero = bayes.Counts(0, 0)
        merged = {**global_counts, **{
            t: bayes.Counts(global_counts.get(t, zero).spam + c.spam,
                            global_counts.get(t, zero).ham + c.ham)
            for t, c in by_model[model.pk].items()}}
        spam_total, ham_total = base_spam + model.spam_count, base_ham + model.ham_count
        scores[mailbox_id] = bayes.score(tokens, merged, spam_total, ham_total) \
            if is_trained(spam_total, ham_total) else None
    return scores


def is_trained(spam_total: int, ham_total: int) -> bool:
    """Too few examples of either class give confident nonsense (SpamBayes
    warns below a handful of each)."""
    return spam_total >= 5 and ham_total >= 5


def train_stored(mailbox_id: int, blob_ids: Sequence[str], *, is_spam: bool) -> int:
    """Train a user's model on stored messages (by blob sha256)."""
    store = get_blob_store()
    messages = []
    for sha in dict.fromkeys(blob_ids):
        try:
            data = store.read(sha)
        except FileNotFoundError:
            continue  # expunged and collected meanwhile: nothing to learn
        messages.append(LabelledMessage(sha, frozenset(bayes.tokenize(data))))
    return train(user_model(mailbox_id), messages, is_spam=is_spam)


def on_transfer(transfer: Transfer) -> None:
    """Store hook: into Junk is spam, out of Junk (not to Trash) is ham."""
    from apps.antispam import tasks

    junk, trash = SpecialUse.JUNK.value, SpecialUse.TRASH.value
    into_junk = transfer.target_special_use == junk and transfer.source_special_use != junk
    out_of_junk = (transfer.source_special_use == junk
                   and transfer.target_special_use not in (junk, trash))
    if into_junk or out_of_junk:
        tasks.train_messages.delay(transfer.mailbox_id, list(transfer.blob_ids), into_junk)
