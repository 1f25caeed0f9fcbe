"""The outbound queue: the database is the queue (DESIGN.md "Queues and workers").

One ``OutboundMessage`` per accepted message (its bytes are a store Blob), one
``QueueEntry`` per remote recipient still to be delivered. An entry is deleted
once it is delivered or bounced, and the message with its last entry; Celery
only ever carries primary keys."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.directory.models import Mailbox
from apps.store.models import Blob


class OutboundMessage(models.Model):
    queue_id = models.CharField(max_length=32, unique=True)
    # PROTECT: the store's garbage collector skips blobs any relation points at.
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="outbound")
    sender = models.CharField(max_length=320, blank=True, help_text="empty: the null sender <>")
    # RFC 3461 §4.3 RET (FULL / HDRS, empty: not given) and §4.4 ENVID (decoded).
    ret = models.CharField(max_length=4, blank=True)
    envid = models.CharField(max_length=100, blank=True)
    # RFC 8689 §4.1: the message came with REQUIRETLS, and is delivered only
    # over validated TLS to a server that offers REQUIRETLS (services._send).
    require_tls = models.BooleanField(default=False)
    # RFC 3030 §3: BODY=BINARYMIME; every octet kept, sent only with BDAT.
    binarymime = models.BooleanField(default=False)
    arrival = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()

    class Meta:
        ordering = ["arrival"]

    def __str__(self) -> str:
        return self.queue_id


class QueueEntry(models.Model):
    message = models.ForeignKey(OutboundMessage, on_delete=models.CASCADE,
                                related_name="entries")
    recipient = models.CharField(max_length=320)
    domain = models.CharField(max_length=255)
    # RFC 3461 §4.1 NOTIFY: empty (not given), "NEVER", or a comma list of
    # SUCCESS, FAILURE, DELAY; §4.2 ORCPT as "addr-type;address" (decoded).
    notify = models.CharField(max_length=30, blank=True)
    orcpt = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt = models.DateTimeField(default=timezone.now)
    last_reply = models.TextField(blank=True)
    last_host = models.CharField(max_length=255, blank=True)
    delay_notified = models.BooleanField(default=False)
    # A claim is a worker's lease on the entry; past claimed_until it is free again.
    claim = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message_id", "pk"]
        indexes = [models.Index(fields=["next_attempt"], name="queueentry_next_attempt")]
        verbose_name_plural = "queue entries"

    def __str__(self) -> str:
        return f"{self.message_id}:{self.recipient}"

    def notify_on(self, event: str) -> bool:
        """RFC 3461 §4.1: without NOTIFY, FAILURE (and DELAY at our discretion) apply."""
        if not self.notify:
            return event in ("FAILURE", "DELAY")
        return event in self.notify.split(",")


class Vacation(models.Model):
    """A mailbox's vacation auto-reply (RFC 3834), set in the webmail's
    settings; what runs is the Sieve vacation action that the settings write
    into the mailbox's active script (apps/delivery/rules.py)."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, related_name="vacation")
    enabled = models.BooleanField(default=False)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    start = models.DateField(null=True, blank=True, help_text="first day; empty: from now")
    end = models.DateField(null=True, blank=True, help_text="last day; empty: until turned off")

    def __str__(self) -> str:
        return f"vacation of {self.mailbox_id}"


class Forwarding(models.Model):
    """A mailbox's forwarding as its user set it in the webmail; what runs is
    the Sieve redirect that the settings write into the mailbox's active
    script (apps/delivery/rules.py). An administrator's forwarding is the
    directory's (Mailbox.forward_to), done when the address is resolved."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, related_name="forwarding")
    addresses = models.JSONField(default=list, blank=True)
    keep_copy = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"forwarding of {self.mailbox_id}"


class VacationReply(models.Model):
    """When a mailbox last answered a sender: at most one reply per sender per
    MAILHOST_VACATION_INTERVAL_DAYS (RFC 3834 §2)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE,
                                related_name="vacation_replies")
    sender = models.CharField(max_length=320)
    replied = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mailbox", "sender"],
                                               name="vacationreply_unique_sender")]

    def __str__(self) -> str:
        return f"{self.mailbox_id} -> {self.sender}"


class TlsSessionCount(models.Model):
    """How many outbound connections to one MX of one domain ended in one TLS
    outcome on one (UTC) day: the counters TLS reports are made of
    (apps/delivery/tlsrpt.py). One row per day, domain, MX and outcome, not
    one per message."""

    day = models.DateField()
    policy_domain = models.CharField(max_length=255)
    # RFC 8460 §4.4: "sts" or "no-policy-found", and the policy as applied.
    policy_type = models.CharField(max_length=16)
    policy_string = models.TextField(blank=True)  # the policy's lines, LF-joined
    mx_host = models.CharField(max_length=255)
    receiving_ip = models.CharField(max_length=45, blank=True)
    sending_ip = models.CharField(max_length=45, blank=True)
    # "success" or an RFC 8460 §4.3 result type
    result = models.CharField(max_length=40)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "policy_domain", "policy_type", "mx_host", "receiving_ip",
                        "sending_ip", "result"],
                name="tls_session_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.policy_domain} {self.mx_host} {self.result} {self.count}"


class TlsReportSent(models.Model):
    """The TLS report of one day for one domain, once made: the row that
    keeps a second run of the daily task from sending it again."""

    day = models.DateField()
    policy_domain = models.CharField(max_length=255)
    report_id = models.CharField(max_length=200)
    recipients = models.TextField(blank=True)  # the rua addresses it went to, LF-joined
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "policy_domain"],
                                    name="tls_report_sent_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.policy_domain} {self.report_id}"
