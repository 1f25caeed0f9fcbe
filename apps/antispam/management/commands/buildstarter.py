"""Build the classifier's day-one model (apps/antispam/starter/model.json.gz)
from directories of spam and ham, as shipped: from the training part of the
SpamAssassin public corpus (../shared/corpora), the held-out part left out so
that bench/antispam.py still scores mail the model has never seen."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.antispam import bayes, learning
from apps.antispam.corpus import is_held_out, read_messages

# Tokens met in fewer messages than this are left out: they weigh little,
# are most of the model's size, and are where names and addresses are.
MIN_MESSAGES = 4


class Command(BaseCommand):
    help = "Build the day-one spam model: buildstarter --spam DIR --ham DIR [--out FILE]"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--spam", type=Path, required=True)
        parser.add_argument("--ham", type=Path, required=True)
        parser.add_argument("--out", type=Path, default=learning.STARTER_MODEL)

    def handle(self, *args: object, **options: Path) -> None:
        totals = {}
        counts: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
        for label, is_spam in (("spam", True), ("ham", False)):
            directory = options[label]
            if not directory.is_dir():
                raise CommandError(f"{directory} is not a directory")
            training = [data for path, data in read_messages(directory)
                        if not is_held_out(path.name)]
            for data in training:
                counts[is_spam].update(bayes.tokenize(data))
            totals[is_spam] = len(training)
        spam, ham = counts[True], counts[False]
        kept = {token: bayes.Counts(spam[token], ham[token]) for token in spam | ham
                if spam[token] + ham[token] >= MIN_MESSAGES}
        learning.write_starter(options["out"], totals[True], totals[False], kept)
        self.stdout.write(f"{options['out']}: {totals[True]} spam, {totals[False]} ham, "
                          f"{len(kept)} tokens")
