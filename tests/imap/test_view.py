"""The selected folder's in-memory view: sessions on one folder share its
arrays until one of them changes (what lets ten thousand idlers on one large
INBOX fit in one process), and sharing never changes what a session sees."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.imap.view import FolderView, SnapshotCache
from apps.store.models import Flag
from apps.store.services import FolderChanges

FOLDER = 7


def filled(count: int) -> FolderView:
    view = FolderView(folder_id=FOLDER, name="INBOX", uidvalidity=1, readonly=False)
    view.apply(FolderChanges(count, count + 1,
                             [(uid, 0, [], uid) for uid in range(1, count + 1)], []),
               allow_expunge=True)
    return view


def content(view: FolderView) -> tuple:
    return (list(view.uids), list(view.flags), list(view.modseqs), view.keywords,
            view.recent, view.highestmodseq, view.uidnext)


def sessions(count: int, messages: int = 1000) -> list[FolderView]:
    """``count`` sessions' views as SELECT makes them, from one snapshot."""
    snapshots = SnapshotCache()
    snapshots.keep(filled(messages))
    return [snapshots.start(folder_id=FOLDER, name="INBOX", uidvalidity=1, readonly=False)
            for _ in range(count)]


def test_sessions_share_one_copy_of_the_folder_until_one_changes_it():
    first, second, third = sessions(3)
    assert first.uids is second.uids is third.uids and first.flags is third.flags
    # One delivery, read once for all of them (the notify.Watcher shares the read).
    delivery = FolderChanges(1001, 1002, [(1001, 0, [], 1001)], [])
    for view in (first, second, third):
        updates = view.apply(delivery, allow_expunge=True, recent=(1001, 1002)
                             if view is first else (0, 0))
        assert updates.new_uids == [1001] and updates.exists
    assert first.uids is second.uids is third.uids and len(first) == 1001
    assert first.recent == {1001} and not second.recent  # \Recent stays per session
    # A session's own STORE copies the arrays; the others do not see it.
    second.set_flags(5, Flag.SEEN, ["$Label1"], 1002)
    assert second.flags[4] == Flag.SEEN and second.keywords == {5: ["$Label1"]}
    assert first.flags[4] == third.flags[4] == 0 and not first.keywords
    assert first.uids is third.uids and second.uids is not first.uids


def test_an_expunge_held_back_in_one_session_is_not_taken_by_the_others():
    first, second = sessions(2, 10)
    gone = FolderChanges(11, 11, [], [3])
    # RFC 3501 §7.4.1: during FETCH the expunge waits; at NOOP it is told.
    assert first.apply(gone, allow_expunge=False).expunged == []
    assert second.apply(gone, allow_expunge=True).expunged == [(3, 3)]
    assert len(first) == 10 and first.pending_expunge == {3}
    assert len(second) == 9
    assert first.apply(FolderChanges(11, 11, [], []), allow_expunge=True).expunged == [(3, 3)]
    assert list(first.uids) == list(second.uids)


deltas = st.lists(st.tuples(
    st.lists(st.tuples(st.integers(1, 30), st.integers(0, 31),
                       st.sampled_from([[], ["$Label1"], ["$Junk", "x"]])), max_size=6),
    st.lists(st.integers(1, 30), max_size=3), st.booleans(), st.booleans()), max_size=8)


@settings(max_examples=200, deadline=None)
@given(deltas=deltas, own_store=st.integers(0, 12))
def test_shared_views_see_what_views_of_their_own_see(deltas, own_store):
    """Any run of deltas (new messages, flag changes, expunges told now or
    held back, not always in both sessions) leaves each of two sharing
    sessions exactly where a session with arrays of its own would be,
    whatever one of them stores meanwhile."""
    shared = sessions(2, 10)
    alone = [filled(10), filled(10)]
    modseq = 10
    for step, (changed, expunged, *allow) in enumerate(deltas):
        modseq += 1
        rows = [(uid, bits, words, modseq) for uid, bits, words in
                sorted({uid: (uid, bits, words) for uid, bits, words in changed}.values())]
        delta = FolderChanges(modseq, 31, rows, sorted(set(expunged)))
        for views in (shared, alone):
            for view, allowed in zip(views, allow, strict=True):
                view.apply(delta, allow_expunge=allowed, recent=(5, 31))
            if step == own_store and len(views[0]):
                views[0].set_flags(views[0].uids[0], Flag.FLAGGED, [], modseq)
        assert [content(v) for v in shared] == [content(v) for v in alone]


def test_fetch_of_view_items_answers_as_each_item_alone():
    """FETCH of UID, FLAGS and MODSEQ is formatted from the view in one loop
    (flag lists shared between messages): the same bytes as item by item."""
    from types import SimpleNamespace

    from apps.imap.parser import FetchAtt
    from apps.imap.session import _fetch_item, _view_items

    view = filled(50)
    view.apply(FolderChanges(60, 61, [(uid, uid % 32, ["$Label1"] if uid % 7 == 0 else [], 60)
                                      for uid in range(1, 51, 3)], []), allow_expunge=True)
    view.mark_recent(40, 61)
    session = SimpleNamespace(view=view)
    positions = list(range(0, 50, 2))
    for names in (["UID", "FLAGS"], ["FLAGS"], ["UID", "FLAGS", "MODSEQ"], ["MODSEQ", "UID"]):
        expected = b"".join(
            b"* %d FETCH (%s)\r\n" % (p + 1, b" ".join(
                _fetch_item(session, FetchAtt(name), p, None, False) for name in names))
            for p in positions)
        assert _view_items(view, positions, names) == expected, names
