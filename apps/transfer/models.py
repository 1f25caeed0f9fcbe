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
        # Its worker went away mid-run (no progress for MAILHOST_IMPORT_STALE_SECONDS):
        # it can be resumed, and the resumed run copies only what is missing.
        INTERRUPTED = "interrupted", "interrupted"
        CANCELLED = "cancelled", "cancelled"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="import_jobs")
    source = models.CharField(max_length=500)  # what it reads, as the page names it
    folder = models.CharField(max_length=1000, default="INBOX")
    # The sha256 of the uploaded mbox in the blob store (which every node
    # shares); removed when the job ends. Empty for an IMAP import.
    upload = models.CharField(max_length=500, blank=True)
    # An IMAP import's remote account. Its password is kept only encrypted
    # (apps/transfer/jobs.py, a key derived from SECRET_KEY) and wiped when
    # the job ends; an interrupted job keeps it until it is resumed or cancelled.
    imap_host = models.CharField(max_length=255, blank=True)
    imap_port = models.PositiveIntegerField(null=True, blank=True)
    imap_tls = models.CharField(max_length=16, blank=True)
    imap_user = models.CharField(max_length=320, blank=True)
    imap_verify_certificate = models.BooleanField(default=True)
    imap_secret = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    messages_total = models.PositiveIntegerField(default=0)
    messages_done = models.PositiveIntegerField(default=0)
    copied = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    current_folder = models.CharField(max_length=1000, blank=True)  # as the source names it
    detail = models.TextField(blank=True)  # why it stopped or failed
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)  # by the current run
    # The last sign of life of the running worker (its latest progress).
    heartbeat = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.mailbox_id} {self.source} {self.status}"

    @classmethod
    def held_uploads(cls, names: list[str]) -> set[str]:
        """Those of the blobs ``names`` that are uploads of unfinished jobs: while
        a job may still run or be resumed, the blob collector leaves its upload
        alone (apps/transfer/apps.py registers the check)."""
        holding = (cls.Status.QUEUED, cls.Status.RUNNING, cls.Status.INTERRUPTED)
        return set(cls.objects.filter(upload__in=names, status__in=holding)
                   .values_list("upload", flat=True))

    @property
    def active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def bytes_per_second(self) -> float:
        """The rate of the current (or last) run."""
        end = self.finished or self.heartbeat
        if not self.started or not end:
            return 0.0
        return self.bytes_done / max((end - self.started).total_seconds(), 0.001)
