"""Large folders and many clients: many IDLE sessions in one listener all told
of a delivery while holding one copy of the folder, and QRESYNC's sequence
match data sparing a client the expunges it knows of (RFC 7162 §3.2.5.2)."""

from __future__ import annotations

import gc
import re

from apps.imap.session import IMAPSession
from apps.store import services as store
from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP

IDLERS = 100
MESSAGES = 300


def message(number: int) -> bytes:
    return (b"From: Dave <dave@example.net>\r\nTo: alice@example.test\r\n"
            b"Subject: note %d\r\n\r\nbody %d\r\n" % (number, number))


def idle_in_inbox(imap_port: int, mailbox, count: int) -> list[RawIMAP]:  # type: ignore[no-untyped-def]
    """``count`` sessions of ``mailbox``, each in IDLE on its INBOX."""
    idlers = []
    for _ in range(count):
        client = RawIMAP(imap_port)
        client.login(mailbox.address, PASSWORD)
        client.command("SELECT INBOX")
        client.send(b"i IDLE\r\n")
        assert client.readline().startswith(b"+ ")
        idlers.append(client)
    return idlers


def test_many_idlers_in_one_process_are_all_told_of_a_delivery(imap_port, mailbox):
    store.deliver_batch([store.DeliveryRequest([mailbox.pk], message(n))
                         for n in range(MESSAGES)])
    idlers = idle_in_inbox(imap_port, mailbox, IDLERS)
    store.deliver([mailbox], message(MESSAGES))
    for client in idlers:
        client.sock.settimeout(20)
        assert client.readline() == b"* %d EXISTS\r\n" % (MESSAGES + 1)
    # The listener runs in this process: its sessions hold one copy of the
    # folder between them, before the delivery and after it.
    # type(), not isinstance(): a dead weakref proxy among the objects would raise.
    views = [obj.view for obj in gc.get_objects()
             if issubclass(type(obj), IMAPSession) and obj.view is not None]
    assert len(views) == IDLERS and len({id(view.uids) for view in views}) == 1
    assert len(views[0]) == MESSAGES + 1
    for client in idlers:
        client.send(b"DONE\r\n")
        assert client.until("i")[-1].startswith(b"i OK")
        client.close()


def test_qresync_match_data_spares_the_expunges_the_client_knows(raw, mailbox):
    store.deliver_batch([store.DeliveryRequest([mailbox.pk], message(n)) for n in range(5)])
    raw.command("ENABLE QRESYNC")
    lines = b"".join(raw.command("SELECT INBOX"))
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", lines).group(1))
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", lines).group(1))
    raw.command("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("UID EXPUNGE 2")[0] == b"* VANISHED 2\r\n"
    # The client saw UID 2 go; another session then expunges UID 5.
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [5], mode="add", flags=8)
    store.expunge(inbox, [5])
    raw.command("UNSELECT")
    # Its cache is 1, 3, 4, 5 at sequence numbers 1-4, its MODSEQ from before
    # both expunges: 1, 3 and 4 are still in place, so 2 is known and only 5 told.
    lines = raw.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5 (1:4 1,3:5)))")
    assert b"* VANISHED (EARLIER) 5\r\n" in lines
    assert not any(line.startswith(b"* VANISHED (EARLIER) 2") for line in lines)
    # Without the match data both expunges since that MODSEQ are told.
    raw.command("UNSELECT")
    lines = raw.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5))")
    assert b"* VANISHED (EARLIER) 2,5\r\n" in lines
    # Data that match nothing (a sequence number past the end) spare nothing.
    raw.command("UNSELECT")
    lines = raw.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5 "
                        "(4:4294967295 5:4294967295)))")
    assert b"* VANISHED (EARLIER) 2,5\r\n" in lines


def test_an_idler_silent_past_the_timeout_is_logged_out(raw, settings):
    settings.MAILHOST_IMAP_TIMEOUT = 1
    raw.command("SELECT INBOX")
    raw.send(b"i IDLE\r\n")
    assert raw.readline().startswith(b"+ ")
    # RFC 3501 §5.4: an autologout timer; RFC 2177 §3 expects clients to
    # re-issue IDLE at least every 29 minutes.
    raw.sock.settimeout(20)
    assert raw.readline() == b"* BYE autologout; idle for too long\r\n"


def test_idlers_told_together_give_recent_to_one_of_them(imap_port, mailbox):
    idlers = idle_in_inbox(imap_port, mailbox, 5)
    store.deliver([mailbox], message(1))
    recent = []
    for client in idlers:
        assert client.readline() == b"* 1 EXISTS\r\n"
        recent.append(client.readline())
    # RFC 3501 §2.3.2: the new message is \Recent in one session only.
    assert sorted(recent) == [b"* 0 RECENT\r\n"] * 4 + [b"* 1 RECENT\r\n"]
    # An expunge reaches them all as well, in IDLE.
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [1], mode="add", flags=8)
    store.expunge(inbox, [1])
    for client in idlers:
        line = client.readline()
        if b"FETCH" in line:  # the \Deleted flag, when told apart from the expunge
            line = client.readline()
        assert line == b"* 1 EXPUNGE\r\n"
        client.send(b"DONE\r\n")
        assert client.until("i")[-1].startswith(b"i OK")
        client.close()


def test_idlers_of_one_folder_share_one_read_of_a_change(imap_port, mailbox, monkeypatch):
    idlers = idle_in_inbox(imap_port, mailbox, 30)
    reads = []
    real = store.folder_changes

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "folder_changes", counted)
    store.deliver([mailbox], message(1))
    for client in idlers:
        assert client.readline() == b"* 1 EXISTS\r\n"
    # The fan-out costs one read of the change, not one per idler.
    assert len(reads) == 1
    for client in idlers:
        client.close()
