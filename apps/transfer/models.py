from __future__ import annotations

from django.db import models

from apps.directory.models import Mailbox


class ImportedMessage(models.Model):
    """A message of a remote IMAP folder that an import has filed (or found
    filed already), so that the next run neither fetches nor files it again.
    A new UIDVALIDITY makes these stale: that folder is then matched by
    content instead (apps/transfer/importing.py)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE,
                                related_name="imported_messages")
    source = models.CharField(max_length=500)  # imap://user@host:port
    folder = models.CharField(max_length=1000)  # as the source names it
    uidvalidity = models.PositiveBigIntegerField()
    uid = models.PositiveBigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "source", "folder", "uidvalidity", "uid"],
                                    name="imported_message_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.folder} {self.uidvalidity}:{self.uid}"
