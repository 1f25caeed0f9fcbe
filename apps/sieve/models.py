from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.directory.models import Mailbox


class SieveScript(models.Model):
    """A mailbox's Sieve script (RFC 5228), managed over ManageSieve
    (RFC 5804); at most one is active and runs when mail is filed."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE,
                                related_name="sieve_scripts")
    name = models.CharField(max_length=128)
    content = models.TextField()
    active = models.BooleanField(default=False)
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="sievescript_unique_name"),
            models.UniqueConstraint(fields=["mailbox"], condition=models.Q(active=True),
                                    name="sievescript_one_active"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.mailbox_id}"
