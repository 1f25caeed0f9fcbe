from __future__ import annotations

from django.db import models
from django.utils import timezone

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


class ImportJob(models.Model):
    """An import started from the admin panel and run by a worker; its
    progress is kept here for the mailbox's page to show."""

    class Status(models.TextChoices):
        QUEUED = "queued", "waiting for a worker"
        RUNNING = "running", "running"
        DONE = "done", "done"
        STOPPED = "stopped", "stopped"
        FAILED = "failed", "failed"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="import_jobs")
    source = models.CharField(max_length=500)  # what it reads, as the page names it
    folder = models.CharField(max_length=1000, default="INBOX")
    # The uploaded mbox, under the blob store's root (shared by web and workers);
    # removed when the job ends.
    upload = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    messages_total = models.PositiveIntegerField(default=0)
    messages_done = models.PositiveIntegerField(default=0)
    copied = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    detail = models.TextField(blank=True)  # why it stopped or failed
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.mailbox_id} {self.source} {self.status}"

    @property
    def active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)
