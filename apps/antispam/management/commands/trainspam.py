"""Train the global classifier from directories of spam and ham files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.antispam import bayes, learning
from apps.antispam.corpus import read_messages

BATCH = 500


class Command(BaseCommand):
    help = "Train the global spam classifier: trainspam --spam DIR --ham DIR"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--spam", type=Path, action="append", default=[])
        parser.add_argument("--ham", type=Path, action="append", default=[])

    def handle(self, *args: object, **options: list[Path]) -> None:
        if not options["spam"] and not options["ham"]:
            raise CommandError("give at least one --spam DIR or --ham DIR")
        model = learning.global_model()
        for label, is_spam in (("spam", True), ("ham", False)):
            learnt = total = 0
            for directory in options[label]:
                if not directory.is_dir():
                    raise CommandError(f"{directory} is not a directory")
                batch: list[learning.LabelledMessage] = []
                for _, data in read_messages(directory):
                    batch.append(learning.LabelledMessage(
                        hashlib.sha256(data).hexdigest(), frozenset(bayes.tokenize(data))))
                    if len(batch) == BATCH:
                        learnt += learning.train(model, batch, is_spam=is_spam)
                        total += len(batch)
                        batch = []
                learnt += learning.train(model, batch, is_spam=is_spam)
                total += len(batch)
            self.stdout.write(f"{label}: {learnt} learnt of {total} files")
