from __future__ import annotations

from django.db import models

from apps.directory.models import Mailbox


class WritingSettings(models.Model):
    """What the webmail puts into the mail a user writes: the signature, and the
    identities offered as From (``[{"address": ..., "name": ...}]``, each one an
    address that ``directory.may_send_as`` allows; empty: the own address)."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE,
                                   related_name="writing_settings")
    signature = models.TextField(blank=True)
    identities = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"writing settings of {self.mailbox_id}"
