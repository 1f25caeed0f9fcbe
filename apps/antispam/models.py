from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.directory.models import Mailbox
from apps.store.models import Blob


class SpooledMessage(models.Model):
    """A message accepted over SMTP (250 sent) and not yet filed into mailboxes.

    The row and its blob are durable before the 250; the check task files the
    message and deletes the row in one transaction, so a message is delivered
    exactly once whichever of the task or the sweeper gets to it."""

    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="spooled")
    mailbox_ids = models.JSONField()
    received = models.DateTimeField(default=timezone.now, db_index=True)
    client_ip = models.CharField(max_length=45)
    helo = models.CharField(max_length=255, blank=True)
    mail_from = models.CharField(max_length=320, blank=True)
    spf_result = models.CharField(max_length=16, blank=True)
    spf_explanation = models.CharField(max_length=500, blank=True)
    authenticated = models.BooleanField(default=False)
    # The SMTP queue id, so that the checks and the filing join the message trace.
    queue_id = models.CharField(max_length=32, blank=True)
    # The MAIL parameters a Sieve redirect keeps: REQUIRETLS (RFC 8689 §6) and
    # BODY=BINARYMIME (RFC 3030 §3).
    require_tls = models.BooleanField(default=False)
    binarymime = models.BooleanField(default=False)
    # A worker checking the message holds it until then; after that the
    # sweeper may take it (a dead worker's claim expires).
    claimed_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"spool {self.pk} ({self.blob_id[:12]})"


class BayesModel(models.Model):
    """Token counts of one classifier: the global one (no mailbox) or a user's."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, null=True, blank=True,
                                   related_name="bayes_model")
    spam_count = models.PositiveIntegerField(default=0)
    ham_count = models.PositiveIntegerField(default=0)
    # Counts up with every training, so that a worker holding the counts in
    # memory reads only the tokens changed since the revision it has.
    revision = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"bayes {self.mailbox_id or 'global'}"


class BayesToken(models.Model):
    model = models.ForeignKey(BayesModel, on_delete=models.CASCADE, related_name="tokens")
    token = models.CharField(max_length=100)
    spam_count = models.PositiveIntegerField(default=0)
    ham_count = models.PositiveIntegerField(default=0)
    revision = models.PositiveBigIntegerField(default=0)  # the model's, when last changed

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "token"], name="bayes_token_unique"),
        ]
        indexes = [models.Index(fields=["model", "revision"], name="bayes_token_revision")]

    def __str__(self) -> str:
        return f"{self.token} {self.spam_count}/{self.ham_count}"


class TrainedMessage(models.Model):
    """What a model learnt from a message, so that training is idempotent and
    a message moved back out of Junk is unlearnt as spam before it is learnt
    as ham."""

    model = models.ForeignKey(BayesModel, on_delete=models.CASCADE, related_name="trained")
    digest = models.CharField(max_length=64)
    is_spam = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "digest"], name="bayes_trained_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.digest[:12]} {'spam' if self.is_spam else 'ham'}"


class FirstSeenDomain(models.Model):
    """When this server first met a registrable domain in a message's links:
    phishing sites are days old, so a link to one is a clue."""

    name = models.CharField(max_length=253, unique=True)
    first_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.name} {self.first_seen:%Y-%m-%d}"
