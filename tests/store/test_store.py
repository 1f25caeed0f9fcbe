import os
import time

import pytest

from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.store.models import Blob, Expunged, Flag, Folder, Message
from mailhost.errors import NotFound, OverQuota
from tests.factories import make_mailbox

pytestmark = pytest.mark.django_db

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
           b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <m1@example.org>\r\n"
           b"Date: Thu, 26 Nov 2026 10:00:00 +0100\r\n\r\nHello\r\n")


def test_new_mailbox_gets_default_folders_with_special_use():
    mailbox = make_mailbox()
    folders = {f.name: f.special_use for f in store.list_folders(mailbox)}
    assert folders == {"INBOX": "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Junk": "\\Junk",
                       "Trash": "\\Trash", "Archive": "\\Archive"}
    assert store.get_folder(mailbox, "inbox").name == "INBOX"


def test_deliver_stores_bytes_once_for_many_recipients_and_parses_headers():
    boxes = [make_mailbox() for _ in range(3)]
    messages = store.deliver(boxes, MESSAGE)
    assert len(messages) == 3 and {m.blob_id for m in messages} == {messages[0].blob_id}
    assert Blob.objects.count() == 1
    blob = Blob.objects.get()
    assert get_blob_store().read(blob.sha256) == MESSAGE
    assert blob.subject == "Grüße" and blob.message_id == "<m1@example.org>"
    assert blob.sent_date.isoformat() == "2026-11-26T09:00:00+00:00"
    for box in boxes:
        inbox = store.get_folder(box, "INBOX")
        assert (inbox.message_count, inbox.total_size, inbox.uidnext) == (1, len(MESSAGE), 2)


def test_a_nul_in_the_header_is_stored_on_either_database():
    # Raw (a binary body's header, RFC 3030) and from an encoded-word: PostgreSQL
    # keeps no NUL in text or jsonb; the blob keeps the octets, the parsed
    # fields a U+FFFD.
    message = (b"From: A\x00l <a@example.org>\r\nSubject: =?utf-8?q?x=00y?=\r\n"
               b"To: b@example.org\r\n\r\nbody\x00\r\n")
    (delivered,) = store.deliver([make_mailbox()], message)
    blob = Blob.objects.get(pk=delivered.blob_id)
    assert get_blob_store().read(blob.sha256) == message
    assert blob.subject == "x\ufffdy" and blob.envelope[2][0][0] == "A\ufffdl"


def test_uids_and_modseqs_increase_per_folder():
    mailbox = make_mailbox()
    uids, modseqs = [], []
    for n in range(5):
        (message,) = store.deliver([mailbox], MESSAGE + str(n).encode())
        uids.append(message.uid)
        modseqs.append(message.modseq)
    assert uids == [1, 2, 3, 4, 5]
    assert modseqs == sorted(set(modseqs))
    inbox = store.get_folder(mailbox, "INBOX")
    assert inbox.uidnext == 6 and inbox.highestmodseq == modseqs[-1]


def test_batch_shares_one_transaction_and_reports_per_request():
    roomy = make_mailbox()
    tiny = make_mailbox(quota=10)
    requests = [store.DeliveryRequest([roomy.pk], MESSAGE + b"1"),
                store.DeliveryRequest([tiny.pk], MESSAGE + b"2"),
                store.DeliveryRequest([roomy.pk], MESSAGE + b"3")]
    results = store.deliver_batch(requests)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], OverQuota)
    assert [m.uid for r in (requests[0], requests[2]) for m in r.messages] == [1, 2]
    assert not Message.objects.filter(folder__mailbox=tiny).exists()


def test_quota_is_enforced_and_reported():
    mailbox = make_mailbox(quota=len(MESSAGE) * 2)
    store.deliver([mailbox], MESSAGE)
    store.deliver([mailbox], MESSAGE)
    with pytest.raises(OverQuota):
        store.deliver([mailbox], MESSAGE)
    assert store.quota_usage(mailbox) == (len(MESSAGE) * 2, len(MESSAGE) * 2)
    assert store.mailboxes_over_quota([mailbox], 1) == [mailbox]


def test_delivery_to_missing_folder_falls_back_to_inbox_but_append_refuses():
    mailbox = make_mailbox()
    (message,) = store.deliver([mailbox], MESSAGE, folder="Nope")
    assert message.folder_id == store.get_folder(mailbox, "INBOX").pk
    with pytest.raises(NotFound):
        store.append(mailbox, "Nope", MESSAGE)
    appended = store.append(mailbox, "Drafts", MESSAGE, flags=Flag.DRAFT, keywords=["$Label"])
    assert appended.flag_names == ["\\Draft", "$Label"]


def test_copy_move_flags_expunge():
    mailbox = make_mailbox()
    for n in range(3):
        store.deliver([mailbox], MESSAGE + str(n).encode())
    inbox, archive = store.get_folder(mailbox, "INBOX"), store.get_folder(mailbox, "Archive")

    assert store.copy(inbox, [1, 2], archive) == [(1, 1), (2, 2)]
    assert Blob.objects.count() == 3  # no copy of the bytes

    changes, failed = store.set_flags(inbox, [1, 3], mode="add", flags=Flag.SEEN | Flag.DELETED)
    assert [c.uid for c in changes] == [1, 3] and failed == []
    before = Folder.objects.get(pk=inbox.pk).highestmodseq
    changes, failed = store.set_flags(inbox, [1, 3], mode="remove", flags=Flag.SEEN,
                                      unchanged_since=changes[0].modseq - 1)
    assert changes == [] and failed == [1, 3]  # CONDSTORE: changed since
    assert Folder.objects.get(pk=inbox.pk).highestmodseq == before

    assert store.expunge(inbox, uids=[3]) == [3]
    assert store.expunge(inbox) == [1]
    assert list(Message.objects.filter(folder=inbox).values_list("uid", flat=True)) == [2]
    assert sorted(Expunged.objects.filter(folder=inbox).values_list("uid", flat=True)) == [1, 3]

    assert store.move(inbox, [2], archive) == [(2, 3)]
    inbox.refresh_from_db()
    archive.refresh_from_db()
    assert (inbox.message_count, inbox.total_size) == (0, 0)
    assert archive.message_count == 3 and archive.uidnext == 4


def test_move_within_mailbox_is_allowed_when_full():
    mailbox = make_mailbox(quota=len(MESSAGE))
    store.deliver([mailbox], MESSAGE)
    inbox, junk = store.get_folder(mailbox, "INBOX"), store.get_folder(mailbox, "Junk")
    with pytest.raises(OverQuota):
        store.copy(inbox, [1], junk)
    assert store.move(inbox, [1], junk) == [(1, 1)]


def test_garbage_collection_removes_only_unreferenced_old_blobs(local_store):
    """The local store's files (tests/store/test_s3.py has the S3 store's)."""
    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE)
    (gone,) = store.deliver([mailbox], MESSAGE + b"gone")
    store.set_flags(store.get_folder(mailbox, "INBOX"), [gone.uid], mode="add",
                    flags=Flag.DELETED)
    store.expunge(store.get_folder(mailbox, "INBOX"))
    blobs = local_store
    assert store.collect_garbage(grace_seconds=3600) == 0  # too young
    old = time.time() - 7200
    for blob in Blob.objects.all():
        os.utime(blobs.path(blob.sha256), (old, old))
    Blob.objects.update(created=Blob.objects.first().created.replace(year=2000))
    assert store.collect_garbage(grace_seconds=3600) == 1
    assert not blobs.path(gone.blob_id).exists()
    assert Blob.objects.count() == 1 and blobs.path(Blob.objects.get().sha256).exists()


def test_garbage_collection_removes_files_left_by_a_writer_killed_before_its_commit(
        local_store):
    """A process SIGKILLed between the blob's fsync and the commit of its row
    leaves a file, or a temporary file, that no row names (chaos rounds found
    them): the collector removes them once they are older than the grace.
    The local store's files (tests/store/test_s3.py has the S3 store's)."""
    mailbox = make_mailbox()
    (kept,) = store.deliver([mailbox], MESSAGE)
    blobs = local_store
    (orphan,) = blobs.put_many([MESSAGE + b"never committed"])
    temporary = blobs.tmp / "killed-mid-write.tmp"
    temporary.write_bytes(b"half a message")
    assert store.collect_garbage(grace_seconds=3600) == 0  # too young: a commit may follow
    old = time.time() - 7200
    for path in (blobs.path(orphan), blobs.path(kept.blob_id), temporary):
        os.utime(path, (old, old))
    assert store.collect_garbage(grace_seconds=3600) == 2
    assert not blobs.path(orphan).exists() and not temporary.exists()
    assert blobs.read(kept.blob_id).endswith(MESSAGE)


def test_store_calls_share_a_transaction_and_are_refused_alone():
    from apps.store.batching import StoreCall, run_calls

    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE)
    inbox = store.get_folder(mailbox, "INBOX")
    results = run_calls([
        StoreCall(store.set_flags, (inbox, [1]), {"mode": "add", "flags": Flag.DELETED}),
        # Refused: its savepoint alone is undone, the calls around it stand.
        StoreCall(store.unsubscribe, (mailbox, "Nowhere")),
        StoreCall(store.expunge, (inbox,)),
    ])
    assert isinstance(results[1], NotFound) and results[2] == [1]
    assert [c.uid for c in results[0][0]] == [1]
    assert not Message.objects.filter(folder=inbox).exists()
    # A call alone in its batch (no savepoint) is undone whole when refused.
    store.deliver([mailbox], MESSAGE)

    def flag_then_refuse() -> None:
        store.set_flags(inbox, [2], mode="add", flags=Flag.FLAGGED)
        raise NotFound("refused after writing")

    assert isinstance(run_calls([StoreCall(flag_then_refuse)])[0], NotFound)
    assert Message.objects.get(folder=inbox, uid=2).flags == 0
    assert run_calls([StoreCall(store.unsubscribe, (mailbox, "Sent"))]) == [None]
    assert "Sent" not in store.subscribed_names(mailbox)


def test_stores_expunges_and_claims_that_change_nothing():
    # These answer from a read, without the write lock: the answers stay exact.
    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE, flags=Flag.SEEN)
    inbox = store.get_folder(mailbox, "INBOX")
    before = Folder.objects.get(pk=inbox.pk).highestmodseq
    assert store.set_flags(inbox, [1], mode="add", flags=Flag.SEEN) == ([], [])
    assert store.set_flags(inbox, [1], mode="remove", flags=Flag.SEEN,
                           unchanged_since=0) == ([], [1])
    assert store.expunge(inbox) == []
    assert Folder.objects.get(pk=inbox.pk).highestmodseq == before
    assert store.claim_recent(inbox) == (1, 2)
    assert store.claim_recent(inbox) == (2, 2)  # nothing new: an empty range


def test_a_prefix_of_a_filed_message_is_read_across_its_added_fields():
    """filed.message_prefix (IMAP header and <0.n> fetches): the blob read in
    a range, with the fields added at filing in place, for every length."""
    from apps.store import filed

    (name,) = get_blob_store().put_many([MESSAGE])
    added = b"X-Spam-Status: No\r\n"
    added_at = MESSAGE.index(b"Subject:")
    whole = filed.message_bytes(name, added, added_at)
    for length in range(len(whole) + 3):
        assert filed.message_prefix(name, added, added_at, length) == whole[:length]
        assert filed.message_prefix(name, b"", 0, length) == MESSAGE[:length]
    assert filed.message_prefix(name, added, added_at, 1 << 40) == whole  # a client's count
