from __future__ import annotations

from django.db import models

from apps.directory.models import Mailbox
from apps.store.models import Folder


class MaildropLock(models.Model):
    """RFC 1939 §8 / RFC 2449 §8.1.2 [IN-USE]: one POP3 session per mailbox.

    A row, not a process-local set, so that it holds across listener processes
    and hosts. The owning session renews ``expires`` while it lives; a row left
    by a process that died stops counting once it has expired, or as soon as
    its owner (``host``, ``pid``) is known to be gone."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, primary_key=True,
                                   related_name="+")
    token = models.CharField(max_length=64)
    expires = models.DateTimeField()
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.mailbox_id} until {self.expires}"


class WireSize(models.Model):
    """A blob's size as POP3 sends it (bare LF counted as CRLF, RFC 1939 §11).

    Blobs never change, so this is worked out once per blob, the first time a
    maildrop holding it is opened, and LIST/STAT then need no blob read. Keyed
    by the sha256 without a foreign key, so that it never keeps a blob alive;
    the garbage collector's listener (services.forget_collected) drops the rows
    of the blobs it removes."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.PositiveBigIntegerField()

    def __str__(self) -> str:
        return f"{self.sha256}: {self.size}"


class MailboxOptions(models.Model):
    """POP3 options of one mailbox (no row: the defaults)."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, primary_key=True,
                                   related_name="pop3_options")
    # "Leave a copy on the server": DELE + QUIT hides a message from POP3 only;
    # IMAP and webmail keep it.
    leave_copy = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "mailbox options"

    def __str__(self) -> str:
        return f"{self.mailbox_id} leave_copy={self.leave_copy}"


class HiddenMessage(models.Model):
    """A message that POP3 deleted while its mailbox leaves a copy on the server:
    no longer in any POP3 maildrop, still in the folder. UIDs are never reused
    in a folder, so a row can never hide another message."""

    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="+")
    uid = models.PositiveBigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["folder", "uid"], name="pop3_hidden_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.folder_id}:{self.uid}"
