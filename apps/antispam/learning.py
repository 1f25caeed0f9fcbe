"""The classifier's memory: token counts per model in the database, and a
copy of them in each process that classifies.

The global model is trained by the operator (``manage.py trainspam``); each
mailbox has its own model, trained when its user moves mail into or out of
Junk. A message is scored on the sum of both, so a user's corrections weigh
on top of the site-wide knowledge. Training is idempotent per message (its
sha256) and a message learnt with the other label is unlearnt first.

Every training counts the model's revision up and stamps the token rows it
changes with it. A process that classifies keeps each model's counts in
memory, loaded once; before each message, or each batch of spooled messages,
it reads the revisions of the models concerned (one small query) and fetches
only the token rows changed since the revision it holds. So a message is
scored without a query per token or per batch of tokens, and a training done
in any other process (a user moving mail into Junk over IMAP, the webmail's
spam button) weighs on the next message or batch.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet

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
        locked.revision += 1
        _apply(locked, spam_delta, ham_delta)
        unlearnt = len(relabelled)
        if is_spam:
            locked.spam_count = F("spam_count") + len(learnt)
            locked.ham_count = F("ham_count") - unlearnt
        else:
            locked.ham_count = F("ham_count") + len(learnt)
            locked.spam_count = F("spam_count") - unlearnt
        locked.save(update_fields=["spam_count", "ham_count", "revision"])
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
        row.revision = model.revision
    BayesToken.objects.bulk_update(changed, ["spam_count", "ham_count", "revision"],
                                   batch_size=_CHUNK)
    BayesToken.objects.bulk_create(new, batch_size=_CHUNK)


class _ModelCounts:
    """One model's token counts as this process last read them."""

    __slots__ = ("ham_total", "pk", "revision", "spam_total", "tokens")

    def __init__(self, pk: int, revision: int, spam_total: int, ham_total: int,
                 tokens: dict[str, tuple[int, int]]) -> None:
        self.pk, self.revision = pk, revision
        self.spam_total, self.ham_total = spam_total, ham_total
        self.tokens = tokens


class _Scorer:
    """f(w) under one model, or under a user's model over the global one (the
    counts summed), worked out once per pair of counts: a token's f(w)
    depends on its counts alone, and a model has few different counts (2,742
    among the 339,498 tokens of the shared corpora's training split)."""

    def __init__(self, layers: tuple[_ModelCounts, ...]) -> None:
        self.layers = layers
        self.spam_total = sum(layer.spam_total for layer in layers)
        self.ham_total = sum(layer.ham_total for layer in layers)
        self._by_counts: dict[tuple[int, int], tuple[float, float] | None] = {}

    def clues(self, counted: dict[str, tuple[int, int]]) -> list[bayes.Clue]:
        """The clue of each (token, counts) whose f(w) is far enough from 0.5
        to count."""
        by_counts = self._by_counts
        clues = []
        for token, counts in counted.items():
            judged = by_counts.get(counts, _UNSEEN)
            if judged is _UNSEEN:
                judged = by_counts[counts] = bayes.strength_and_probability(
                    counts, self.spam_total, self.ham_total)
            if judged is not None:
                clues.append((judged[0], token, judged[1]))
        return clues


def _counted(tokens: set[str], layers: tuple[_ModelCounts, ...],
             below: dict[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, int]]:
    """Each of ``tokens`` that a layer knows, with its counts summed over the
    layers and over ``below`` (the same tokens' counts in the layers under
    these): a user's model is added to the global one's counts, not looked up
    in it again. A token none knows has f(w) 0.5, never a clue."""
    counted = dict(below or {})
    for layer in layers:
        known = layer.tokens
        if not counted:
            get = known.get
            counted = {token: counts for token in tokens if (counts := get(token))}
            continue
        # dict.keys() & set looks up the set's members, in C.
        for token in known.keys() & tokens:
            spam, ham = known[token]
            under = counted.get(token, (0, 0))
            counted[token] = (under[0] + spam, under[1] + ham)
    return counted


_UNSEEN = object()

ModelRow = tuple[int, int | None, int, int, int]  # pk, mailbox, revision, spam, ham

# The day-one model: token counts learnt from the training part of the
# SpamAssassin public corpus (``manage.py buildstarter``; licence beside it),
# so that a new site classifies before anyone trains. It lies under the site's
# own model until that one has learnt STARTER_RETIRES_AT messages of each kind.
STARTER_MODEL = Path(__file__).resolve().parent / "starter" / "model.json.gz"
STARTER_RETIRES_AT = 200
_STARTER_PK = 0  # no database row has it


def write_starter(path: Path, spam_total: int, ham_total: int,
                  tokens: dict[str, bayes.Counts]) -> None:
    """Save counts as the starter model (sorted, so that a rebuild from the
    same mail gives the same bytes)."""
    document = {"spam": spam_total, "ham": ham_total,
                "tokens": {token: list(tokens[token]) for token in sorted(tokens)}}
    # No name and no time in the gzip header: the bytes depend on the counts alone.
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                mtime=0) as out:
        out.write(json.dumps(document, separators=(",", ":")).encode())


@functools.cache
def _starter() -> _ModelCounts:
    with gzip.open(STARTER_MODEL, "rb") as source:
        document = json.load(source)
    return _ModelCounts(_STARTER_PK, 0, document["spam"], document["ham"],
                        {token: (spam, ham) for token, (spam, ham) in document["tokens"].items()})


def _base_layers(global_row: ModelRow | None) -> tuple[_ModelCounts, ...]:
    """The starter model while it is wanted, then the site's global model."""
    layers: tuple[_ModelCounts, ...] = ()
    learnt = (global_row[3], global_row[4]) if global_row else (0, 0)
    if settings.MAILHOST_BAYES_STARTER and min(learnt) < STARTER_RETIRES_AT:
        layers = (_starter(),)
    if global_row and sum(learnt):
        layers = (*layers, _memory.counts(global_row))
    return layers


class _Memory:
    """This process's copy of the models, brought up to date by revision."""

    MAX_MODELS = 1000  # the global one and the users' last seen
    MAX_SCORERS = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: OrderedDict[int, _ModelCounts] = OrderedDict()
        self._scorers: OrderedDict[tuple[tuple[int, int], ...], _Scorer] = OrderedDict()

    def forget(self, pk: int) -> None:
        with self._lock:
            self._models.pop(pk, None)

    def counts(self, row: ModelRow) -> _ModelCounts:
        pk, _, revision, spam_total, ham_total = row
        with self._lock:
            held = self._models.get(pk)
            if held is None or held.revision > revision:
                # New to this process, or rolled back since: read it whole.
                held = _ModelCounts(pk, revision, spam_total, ham_total,
                                    _token_counts(BayesToken.objects.filter(model_id=pk)))
            elif held.revision < revision:
                changed = _token_counts(BayesToken.objects.filter(
                    model_id=pk, revision__gt=held.revision))
                # In place: a scorer at work elsewhere sees each token old or new.
                held.tokens.update(changed)
                held.revision, held.spam_total, held.ham_total = (
                    revision, spam_total, ham_total)
            self._models[pk] = held
            self._models.move_to_end(pk)
            if len(self._models) > self.MAX_MODELS:
                self._models.popitem(last=False)
            return held

    def scorer(self, layers: tuple[_ModelCounts, ...]) -> _Scorer:
        key = tuple((layer.pk, layer.revision) for layer in layers)
        with self._lock:
            scorer = self._scorers.get(key)
            # The same revision read afresh (after forget) is another object.
            if scorer is None or any(
                    mine is not theirs for mine, theirs in zip(scorer.layers, layers, strict=True)):
                scorer = self._scorers[key] = _Scorer(layers)
                if len(self._scorers) > self.MAX_SCORERS:
                    self._scorers.popitem(last=False)
            self._scorers.move_to_end(key)
            return scorer


_memory = _Memory()


def _token_counts(rows: QuerySet[BayesToken]) -> dict[str, tuple[int, int]]:
    # Plain (spam, ham) tuples, not bayes.Counts: the garbage collector stops
    # tracking a tuple of ints, not a named tuple, and a full collection
    # otherwise went through every token of every model held (52 ms a time,
    # 8% of a worker's CPU time in bench/end_to_end.py).
    return {token: (spam, ham) for token, spam, ham in rows.values_list(
        "token", "spam_count", "ham_count").iterator(chunk_size=5000)}


def model_rows(mailbox_ids: Iterable[int]) -> list[ModelRow]:
    """The global model and these mailboxes' models, oldest first, with their
    revisions: for ``classify_tokens``. Plain SQL: building the ORM query took
    longer than running it."""
    table = connection.ops.quote_name(BayesModel._meta.db_table)
    ids = list(dict.fromkeys(mailbox_ids))
    wanted = f" OR mailbox_id IN ({', '.join(['%s'] * len(ids))})" if ids else ""
    sql = (f"SELECT id, mailbox_id, revision, spam_count, ham_count FROM {table} "  # noqa: S608
           f"WHERE mailbox_id IS NULL{wanted} ORDER BY id")
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        return cursor.fetchall()


def classify_tokens(
    tokens: set[str], mailbox_ids: Sequence[int] = (), *, models: list[ModelRow] | None = None,
) -> dict[int | None, bayes.Score | None]:
    """Scores of one message for the global model (key None) and for each
    mailbox (global plus that user's counts), from the counts in memory after
    one query for the models' revisions (``models``: ``model_rows`` of these
    mailboxes and maybe others, read once for a batch of messages); None where
    the model has learnt too little to judge."""
    rows = model_rows(mailbox_ids) if models is None else models
    # Should two global models have been created at once, the first is the one.
    global_row = next((row for row in rows if row[1] is None), None)
    user_rows = {row[1]: row for row in rows if row[1] is not None}
    base = _base_layers(global_row)
    # Looked up once in the global model (the largest: the lookups are most
    # of the cost), then judged under it and under each user's model over it.
    base_counted = _counted(tokens, base)

    def judge(layers: tuple[_ModelCounts, ...], counted: dict[str, tuple[int, int]]
              ) -> bayes.Score | None:
        if not layers:
            return None
        scorer = _memory.scorer(layers)
        if not is_trained(scorer.spam_total, scorer.ham_total):
            return None
        result = bayes.judge(scorer.clues(counted))
        if layers[0].pk == _STARTER_PK:
            result = dataclasses.replace(result, starter=True)
        return result

    scores: dict[int | None, bayes.Score | None] = {None: judge(base, base_counted)}
    for mailbox_id in mailbox_ids:
        row = user_rows.get(mailbox_id)
        if row is None or row[3] + row[4] < max(1, settings.MAILHOST_BAYES_USER_MIN_MESSAGES):
            # Too little of the user's own yet: a handful of moves would
            # otherwise outvote the site's knowledge on every word they share.
            scores[mailbox_id] = scores[None]
        else:
            user = _memory.counts(row)
            scores[mailbox_id] = judge((*base, user), _counted(tokens, (user,), base_counted))
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
