"""POP3's store services: the one-query snapshot, the maildrop lock, UPDATE."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.pop3 import services
from apps.pop3.models import HiddenMessage, MaildropLock, WireSize
from apps.pop3.protocol import to_crlf
from apps.store import services as store
from apps.store.models import Expunged, Message
from tests.factories import make_mailbox
from tests.pop3.helpers import fill, sample_messages
from tests.smtp.helpers import make_message

pytestmark = pytest.mark.django_db(transaction=True)


def queries(function, *args):
    with CaptureQueriesContext(connection) as captured:
        result = function(*args)
    return result, len(captured)


def test_snapshot_query_count_does_not_grow_with_the_mailbox() -> None:
    small, big = make_mailbox(), make_mailbox()
    fill(small, sample_messages(small.address))
    fill(big, [make_message(big.address, subject=f"m{i}") for i in range(40)])
    services.open_maildrop(small)
    services.open_maildrop(big)  # first opening measures the new blobs
    drop_small, count_small = queries(services.open_maildrop, small)
    drop_big, count_big = queries(services.open_maildrop, big)
    assert len(drop_small.entries) == 3 and len(drop_big.entries) == 40
    assert count_small == count_big <= 4  # folder (2), messages, options


def test_snapshot_sizes_are_wire_sizes() -> None:
    mailbox = make_mailbox()
    messages = sample_messages(mailbox.address)
    fill(mailbox, messages)
    drop = services.open_maildrop(mailbox)
    assert [e.size for e in drop.entries] == [len(to_crlf(m)) for m in messages]
    # The message stored with bare LFs is longer on the wire than on disk.
    stored_sizes = list(Message.objects.order_by("uid").values_list("size", flat=True))
    assert drop.entries[2].size > stored_sizes[2]
    assert WireSize.objects.count() == 3


def test_lock_is_exclusive_renewable_and_expires() -> None:
    mailbox = make_mailbox()
    assert services.acquire_lock(mailbox.pk, "a", seconds=60)
    assert not services.acquire_lock(mailbox.pk, "b", seconds=60)
    assert services.renew_lock(mailbox.pk, "a", seconds=60)
    assert not services.renew_lock(mailbox.pk, "b", seconds=60)
    # A lock left by a listener process that died counts no more once expired.
    MaildropLock.objects.filter(mailbox=mailbox).update(
        expires=timezone.now() - timedelta(seconds=1))
    assert services.acquire_lock(mailbox.pk, "b", seconds=60)
    assert not services.renew_lock(mailbox.pk, "a", seconds=60)
    services.release_lock(mailbox.pk, "a")  # not the holder: no effect
    assert not services.acquire_lock(mailbox.pk, "c", seconds=60)
    services.release_lock(mailbox.pk, "b")
    assert services.acquire_lock(mailbox.pk, "c", seconds=60)


def test_update_without_the_lock_removes_nothing() -> None:
    mailbox = make_mailbox()
    fill(mailbox, sample_messages(mailbox.address))
    drop = services.open_maildrop(mailbox)
    uids = [e.uid for e in drop.entries]
    with pytest.raises(services.LockLost):
        services.remove_deleted(mailbox.pk, "stale", drop.folder_id, uids[:1])
    assert Message.objects.count() == 3
    assert services.acquire_lock(mailbox.pk, "mine", seconds=60)
    assert services.remove_deleted(mailbox.pk, "mine", drop.folder_id, uids[:2]) == uids[:2]
    assert list(Message.objects.values_list("uid", flat=True)) == uids[2:]
    assert sorted(Expunged.objects.values_list("uid", flat=True)) == uids[:2]


def test_sizes_and_hidden_marks_go_with_their_messages() -> None:
    """A message hidden by "leave a copy" and then expunged over IMAP leaves
    neither its hidden mark nor, once its blob is collected, its wire size."""
    mailbox = make_mailbox()
    fill(mailbox, sample_messages(mailbox.address))
    services.set_leave_copy(mailbox, True)
    drop = services.open_maildrop(mailbox)
    uids = [e.uid for e in drop.entries]
    assert services.acquire_lock(mailbox.pk, "mine", seconds=60)
    services.remove_deleted(mailbox.pk, "mine", drop.folder_id, uids[:2], leave_copy=True)
    inbox = store.get_folder(mailbox, "INBOX")
    store.remove(inbox, uids[:1])  # expunged by another client
    assert WireSize.objects.count() == 3 and HiddenMessage.objects.count() == 2
    assert store.collect_garbage(grace_seconds=0) == 1
    assert WireSize.objects.count() == 2
    assert list(HiddenMessage.objects.values_list("uid", flat=True)) == [uids[1]]
    assert [e.uid for e in services.open_maildrop(mailbox).entries] == uids[2:]
