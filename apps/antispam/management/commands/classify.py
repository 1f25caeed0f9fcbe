"""Classify message files with the global model, one line per file:
PATH<TAB>spam|ham<TAB>score<TAB>strongest tokens."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.antispam import bayes, learning
from apps.antispam.corpus import message_from_file_bytes

SHOWN_CLUES = 8


class Command(BaseCommand):
    help = "Classify message files: PATH<TAB>spam|ham<TAB>score<TAB>top tokens"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)

    def handle(self, *args: object, **options: list[Path]) -> None:
        for path in options["files"]:
            try:
                data = message_from_file_bytes(path.read_bytes())
            except OSError as error:
                self.stderr.write(f"{path}: {error.strerror}")
                continue
            result = learning.classify_tokens(bayes.tokenize(data))[None]
            if result is None:
                raise CommandError("the model has learnt too little: run trainspam first")
            clues = " ".join(f"{token!r}={f:.3f}" for token, f in result.clues[:SHOWN_CLUES])
            label = "spam" if result.is_spam else "ham"
            self.stdout.write(f"{path}\t{label}\t{result.probability:.4f}\t{clues}")
