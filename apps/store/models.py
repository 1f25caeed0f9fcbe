from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.directory.models import Mailbox


class Flag:
    """System flags as bits (RFC 3501 §2.3.2); keywords are kept as a list."""

    SEEN = 1
    ANSWERED = 2
    FLAGGED = 4
    DELETED = 8
    DRAFT = 16

    NAMES = {"\\Seen": SEEN, "\\Answered": ANSWERED, "\\Flagged": FLAGGED,
             "\\Deleted": DELETED, "\\Draft": DRAFT}


class SpecialUse(models.TextChoices):
    """RFC 6154 §2 special-use attributes."""

    NONE = "", "none"
    ALL = "\\All", "\\All"
    ARCHIVE = "\\Archive", "\\Archive"
    DRAFTS = "\\Drafts", "\\Drafts"
    FLAGGED = "\\Flagged", "\\Flagged"
    JUNK = "\\Junk", "\\Junk"
    SENT = "\\Sent", "\\Sent"
    TRASH = "\\Trash", "\\Trash"


DEFAULT_FOLDERS = [
    ("INBOX", SpecialUse.NONE),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Junk", SpecialUse.JUNK),
    ("Trash", SpecialUse.TRASH),
    ("Archive", SpecialUse.ARCHIVE),
]


class Folder(models.Model):
    """A mailbox folder. ``name`` is UTF-8 with "/" as hierarchy delimiter."""

    DELIMITER = "/"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=1000)
    special_use = models.CharField(max_length=20, choices=SpecialUse.choices, blank=True)
    uidvalidity = models.PositiveBigIntegerField()
    uidnext = models.PositiveBigIntegerField(default=1)
    highestmodseq = models.PositiveBigIntegerField(default=1)
    # Kept in step by the store services so that STATUS and quotas need no scan.
    message_count = models.PositiveIntegerField(default=0)
    total_size = models.PositiveBigIntegerField(default=0)
    # RFC 3501 §2.3.2 \Recent: the first UID not yet shown as recent to a session
    # (the session that selects the folder read-write claims UIDs up to UIDNEXT).
    recent_uid = models.PositiveBigIntegerField(default=1)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["mailbox_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="folder_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id}:{self.name}"


class Subscription(models.Model):
    """A folder name on the mailbox's subscription list (RFC 3501 §6.3.6).

    Kept apart from Folder because the list holds names, not folders: a
    subscribed folder that is deleted stays subscribed, and a name may be
    subscribed before or after its folder exists."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE,
                                related_name="subscriptions")
    name = models.CharField(max_length=1000)

    class Meta:
        ordering = ["mailbox_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"],
                                    name="subscription_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id}:{self.name}"


class MetadataEntry(models.Model):
    """An IMAP METADATA entry (RFC 5464): of the mailbox's server when
    ``folder`` is null, else of that folder (deleted with it, kept by RENAME).
    ``name`` is lower-case: entry names are case-insensitive (RFC 5464 §3.2)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="metadata")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="metadata")
    name = models.CharField(max_length=1000)
    value = models.BinaryField()

    class Meta:
        ordering = ["mailbox_id", "folder_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], condition=models.Q(
                folder__isnull=True), name="metadata_unique_server_entry"),
            models.UniqueConstraint(fields=["folder", "name"], condition=models.Q(
                folder__isnull=False), name="metadata_unique_folder_entry"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id}:{self.folder_id or ''}:{self.name}"


class UrlAuthKey(models.Model):
    """A folder's mailbox access key for URLAUTH (RFC 4467 §3): URLs signed with
    it work until RESETKEY replaces it or the folder is deleted."""

    folder = models.OneToOneField(Folder, on_delete=models.CASCADE, related_name="urlauth_key")
    key = models.BinaryField()

    def __str__(self) -> str:
        return f"{self.folder_id}"


class Blob(models.Model):
    """Message bytes on disk (content-addressed) and what was parsed from them once.

    Everything here is a function of the bytes, so it is stored once however
    many mailboxes hold the message."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.PositiveBigIntegerField()
    created = models.DateTimeField(default=timezone.now)
    envelope = models.JSONField()
    bodystructure = models.JSONField()
    subject = models.TextField(blank=True)
    from_text = models.TextField(blank=True)
    to_text = models.TextField(blank=True)
    cc_text = models.TextField(blank=True)
    bcc_text = models.TextField(blank=True)
    message_id = models.TextField(blank=True)
    in_reply_to = models.TextField(blank=True)
    references = models.JSONField(default=list)
    sent_date = models.DateTimeField(null=True)
    # Whether the full-text index has the blob's row (BlobText). Kept beside
    # the row so that a SEARCH finds the few blobs not indexed yet through a
    # small partial index instead of joining every message of the folder.
    text_indexed = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["sha256"], condition=models.Q(text_indexed=False),
                                name="blob_text_pending")]

    def __str__(self) -> str:
        return self.sha256


class BlobText(models.Model):
    """A blob's text as SEARCH compares it, case-folded, for the full-text index
    (apps/store/textindex.py). SQLite indexes the columns with an FTS5 trigram
    table kept in step by triggers, PostgreSQL with pg_trgm GIN indexes (both
    created in migration 0004): RFC 3501 §6.4.4 substring matches become
    index lookups."""

    blob = models.OneToOneField(Blob, on_delete=models.CASCADE, related_name="search_text")
    from_text = models.TextField(blank=True)
    to_text = models.TextField(blank=True)
    cc_text = models.TextField(blank=True)
    bcc_text = models.TextField(blank=True)
    subject = models.TextField(blank=True)
    headers = models.TextField(blank=True)  # every header field's decoded value
    body = models.TextField(blank=True)  # decoded text parts and the raw body
    # False when ``body`` holds only the start of a very large body: the index
    # cannot say that such a message lacks a string.
    complete = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["blob"], condition=models.Q(complete=False),
                                name="blobtext_incomplete")]

    def __str__(self) -> str:
        return f"text of {self.blob_id}"


class Message(models.Model):
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="messages")
    uid = models.PositiveBigIntegerField()
    modseq = models.PositiveBigIntegerField()
    # Indexed with the folder (Meta): the full-text index names blobs, and a
    # search wants the messages of those blobs in one folder.
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="messages",
                             db_index=False)
    # Header fields added at filing (Authentication-Results, X-Spam-*) and the
    # offset in the blob where they go (below our Received field): the message
    # is ``blob[:added_at] + added_headers + blob[added_at:]``, so a spooled
    # blob is filed as it is instead of being written a second time. ``size``
    # counts both; apps/store/filed.py puts them together.
    added_headers = models.BinaryField(default=b"", blank=True)
    added_at = models.PositiveIntegerField(default=0)
    size = models.PositiveBigIntegerField()
    internal_date = models.DateTimeField(default=timezone.now)
    flags = models.PositiveSmallIntegerField(default=0)
    keywords = models.JSONField(default=list)

    class Meta:
        ordering = ["folder_id", "uid"]
        constraints = [
            models.UniqueConstraint(fields=["folder", "uid"], name="message_unique_uid"),
        ]
        indexes = [models.Index(fields=["folder", "modseq"], name="message_folder_modseq"),
                   models.Index(fields=["blob", "folder"], name="message_blob_folder")]

    def __str__(self) -> str:
        return f"{self.folder_id}:{self.uid}"

    @property
    def flag_names(self) -> list[str]:
        names = [name for name, bit in Flag.NAMES.items() if self.flags & bit]
        return names + list(self.keywords)


class Expunged(models.Model):
    """A tombstone per expunged UID, so that CONDSTORE/QRESYNC clients can be
    told what vanished since a MODSEQ (RFC 7162 §3.2.10)."""

    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="expunged")
    uid = models.PositiveBigIntegerField()
    modseq = models.PositiveBigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["folder", "modseq"], name="expunged_folder_modseq")]

    def __str__(self) -> str:
        return f"{self.folder_id}:{self.uid} expunged at {self.modseq}"


class TraceKind(models.TextChoices):
    """The stages a message passes, as the message trace shows them."""

    RECEIVED = "received", "received over SMTP"
    SUBMITTED = "submitted", "submitted by a user"
    VERDICT = "verdict", "checked"
    FILED = "filed", "filed"
    QUEUED = "queued", "queued for remote delivery"
    DEFERRED = "deferred", "deferred"
    SENT = "sent", "delivered to the remote server"
    BOUNCED = "bounced", "bounced"
    DSN = "dsn", "delivery report"
    DELETED = "deleted", "deleted from the queue"


class TraceEvent(models.Model):
    """One stage of one message (DESIGN.md "The web side"), written by the
    service doing the work, in its transaction. The message trace and the
    dashboard read these, never the messages."""

    time = models.DateTimeField(default=timezone.now, db_index=True)
    queue_id = models.CharField(max_length=32, db_index=True)
    message_id = models.CharField(max_length=255, blank=True, db_index=True)
    kind = models.CharField(max_length=16, choices=TraceKind.choices)
    # " sender rcpt1 rcpt2 ", lowercased: a search by address or by domain
    # ("@example.com ") is one LIKE on one column.
    addresses = models.TextField(blank=True)
    detail = models.JSONField(default=dict)

    class Meta:
        ordering = ["time", "pk"]

    def __str__(self) -> str:
        return f"{self.queue_id} {self.kind}"


class FlowCounter(models.Model):
    """Messages per hour and kind (received, delivered, junked, sent, deferred,
    bounced), bumped with the events in their transaction. A few shards per
    hour, so that concurrent writers seldom wait for one hot row."""

    hour = models.BigIntegerField(help_text="Unix time // 3600")
    kind = models.CharField(max_length=16)
    shard = models.PositiveSmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "kind", "shard"], name="flowcounter_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.hour} {self.kind} {self.count}"


class Heartbeat(models.Model):
    """The last sign of life of a process: a listener process, a Celery worker,
    beat. The dashboard marks the ones not seen lately as stale."""

    kind = models.CharField(max_length=16)  # listeners | worker | beat
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    detail = models.JSONField(default=dict)
    started = models.DateTimeField(default=timezone.now)
    seen = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "host", "pid"], name="heartbeat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.host}:{self.pid}"


class Lease(models.Model):
    """A named piece of periodic work and who may run it until when
    (apps/store/leases.py): beat runs on every node, the work on one."""

    name = models.CharField(max_length=200, primary_key=True)
    holder = models.CharField(max_length=200)
    expires = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires:%H:%M:%S}"
