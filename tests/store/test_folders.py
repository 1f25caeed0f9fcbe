"""Folder services (create, rename, delete, subscribe), \\Recent claims and the
read helpers IMAP sessions use."""

import pytest

from apps.store import services as store
from apps.store.models import Flag, Folder, Message
from mailhost.errors import Conflict, Invalid, NotFound
from tests.factories import make_mailbox

pytestmark = pytest.mark.django_db

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def names(mailbox) -> set[str]:
    return {f.name for f in store.list_folders(mailbox)}


@pytest.mark.parametrize("bad", [
    "", "/", "a/", "/a", "a//b", "..", "a/../b", ".", "a/./b", "a\x00b", "a\tb",
    "x" * 300, "/".join("a" * 40),
])
def test_folder_names_that_could_escape_or_confuse_are_refused(bad):
    mailbox = make_mailbox()
    with pytest.raises(Invalid):
        store.create_folder(mailbox, bad)
    assert names(mailbox) == {"INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"}


def test_create_makes_parents_and_refuses_duplicates():
    mailbox = make_mailbox()
    folder = store.create_folder(mailbox, "Work/2024/Q1", special_use="\\Archive")
    assert folder.special_use == "\\Archive"
    assert {"Work", "Work/2024", "Work/2024/Q1"} <= names(mailbox)
    with pytest.raises(Conflict):
        store.create_folder(mailbox, "Work")
    assert store.create_folder(mailbox, "inbox/child").name == "INBOX/child"


def test_folders_are_per_mailbox():
    alice, bob = make_mailbox(), make_mailbox()
    store.create_folder(alice, "Secret")
    with pytest.raises(NotFound):
        store.get_folder(bob, "Secret")
    with pytest.raises(NotFound):
        store.delete_folder(bob, "Secret")
    assert "Secret" in names(alice)


def test_rename_moves_children_and_changes_uidvalidity():
    mailbox = make_mailbox()
    store.create_folder(mailbox, "A/B")
    old = store.get_folder(mailbox, "A/B")
    store.append(mailbox, "A/B", MESSAGE)
    store.rename_folder(mailbox, "A", "C/D")
    assert {"C", "C/D", "C/D/B"} <= names(mailbox) and "A" not in names(mailbox)
    moved = store.get_folder(mailbox, "C/D/B")
    assert moved.pk == old.pk and moved.uidvalidity != old.uidvalidity
    assert Message.objects.filter(folder=moved).count() == 1
    with pytest.raises(Conflict):
        store.rename_folder(mailbox, "C", "Sent")
    with pytest.raises(Invalid):
        store.rename_folder(mailbox, "C", "C/D/E")


def test_rename_inbox_moves_its_messages_and_keeps_inbox():
    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE)
    store.rename_folder(mailbox, "INBOX", "Old")
    assert store.get_folder(mailbox, "INBOX").message_count == 0
    assert store.get_folder(mailbox, "Old").message_count == 1


def test_delete_removes_messages_but_not_inbox_or_children():
    mailbox = make_mailbox()
    store.create_folder(mailbox, "P/C")
    store.append(mailbox, "P", MESSAGE)
    store.delete_folder(mailbox, "P")
    assert "P" not in names(mailbox) and "P/C" in names(mailbox)
    assert not Message.objects.filter(folder__mailbox=mailbox).exists()
    with pytest.raises(Invalid):
        store.delete_folder(mailbox, "INBOX")


def test_subscribe_and_status():
    mailbox = make_mailbox()
    assert "Junk" in store.subscribed_names(mailbox)  # default folders start subscribed
    store.unsubscribe(mailbox, "Junk")
    assert "Junk" not in store.subscribed_names(mailbox)
    store.deliver([mailbox], MESSAGE)
    store.deliver([mailbox], MESSAGE + b"more\r\n", flags=Flag.SEEN | Flag.DELETED)
    inbox = store.get_folder(mailbox, "INBOX")
    status = store.folder_status(inbox, ["MESSAGES", "UNSEEN", "DELETED", "SIZE", "RECENT"])
    assert status == {"MESSAGES": 2, "UNSEEN": 1, "DELETED": 1,
                      "SIZE": 2 * len(MESSAGE) + 6, "RECENT": 2}


def test_recent_goes_to_one_claimant_only():
    mailbox = make_mailbox()
    store.deliver([mailbox], MESSAGE)
    inbox = store.get_folder(mailbox, "INBOX")
    assert store.claim_recent(inbox) == (1, 2)
    assert store.claim_recent(inbox) == (2, 2)
    store.deliver([mailbox], MESSAGE)
    assert store.claim_recent(inbox) == (2, 3)


def test_folder_changes_reports_new_changed_and_expunged():
    mailbox = make_mailbox()
    for _ in range(3):
        store.deliver([mailbox], MESSAGE)
    inbox = store.get_folder(mailbox, "INBOX")
    everything = store.folder_changes(inbox.pk, 0)
    assert [row[0] for row in everything.changed] == [1, 2, 3]
    since = everything.highestmodseq
    store.set_flags(inbox, [2], mode="add", flags=Flag.DELETED, keywords=["$Junk"])
    store.expunge(inbox, [2])
    store.set_flags(inbox, [3], mode="add", flags=Flag.SEEN)
    delta = store.folder_changes(inbox.pk, since)
    assert delta.expunged == [2]
    assert [(uid, flags, words) for uid, flags, words, _ in delta.changed] == [
        (3, Flag.SEEN, [])]
    assert store.highest_modseqs([inbox.pk]) == {inbox.pk: delta.highestmodseq}
    assert store.folder_changes(Folder.objects.order_by("-pk")[0].pk + 1, 0) is None
