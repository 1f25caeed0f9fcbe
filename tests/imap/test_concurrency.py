"""Sessions see each other: two clients on one folder, IDLE woken by deliveries
(in this process by SMTP, and from another process through the fallback poller)."""

from __future__ import annotations

import smtplib

from apps.store import services as store
from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP
from tests.smtp.helpers import make_message


def session(port: int, mailbox) -> RawIMAP:  # type: ignore[no-untyped-def]
    client = RawIMAP(port)
    client.login(mailbox.address, PASSWORD)
    client.command("SELECT INBOX")
    return client


def test_two_sessions_see_flags_new_mail_and_expunges_at_allowed_points(imap_port, mailbox):
    for _ in range(3):
        store.deliver([mailbox], make_message(mailbox.address))
    first, second = session(imap_port, mailbox), session(imap_port, mailbox)
    first.command("STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert second.command("NOOP")[0] == b"* 2 FETCH (FLAGS (\\Flagged))\r\n"
    # An expunge by the first session is not told to the second during FETCH,
    # STORE or SEARCH (RFC 3501 §7.4.1): sequence numbers stay valid.
    first.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert first.command("EXPUNGE")[0] == b"* 1 EXPUNGE\r\n"
    store.deliver([mailbox], make_message(mailbox.address))
    lines = second.command("FETCH 3 (UID)")
    assert b"EXPUNGE" not in b"".join(lines)
    assert b"* 3 FETCH (UID 3)\r\n" in lines
    assert b"* 4 EXISTS\r\n" in lines  # new mail may be told any time
    lines = second.command("SEARCH ALL")
    assert b"* SEARCH 2 3 4\r\n" in lines and b"EXPUNGE" not in b"".join(lines)
    # At NOOP the expunge is told, and numbers shift.
    lines = second.command("NOOP")
    assert lines[0] == b"* 1 EXPUNGE\r\n"
    assert second.command("FETCH 3 (UID)")[0] == b"* 3 FETCH (UID 4)\r\n"
    # UID commands may carry expunges.
    first.command("NOOP")  # the first session learns of UID 4
    first.command("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    first.command("UID EXPUNGE 4")
    lines = second.command("UID FETCH 1:* (UID)")
    assert b"* 3 EXPUNGE\r\n" in lines
    # \Recent went to exactly one of the two sessions.
    recent = b"".join(first.command("SEARCH RECENT") + second.command("SEARCH RECENT"))
    assert recent.count(b" 3\r\n") <= 1


def test_a_new_keyword_is_in_flags_before_any_fetch_names_it(imap_port, mailbox):
    """RFC 3501 §7.2.6: the FLAGS list grows, untagged, before a FETCH uses a
    keyword the client was not told of (imaptest's "Keyword used without being
    in FLAGS"; Thunderbird and Apple Mail keep the list)."""
    store.deliver([mailbox], make_message(mailbox.address))
    first, second = session(imap_port, mailbox), session(imap_port, mailbox)
    lines = first.command("STORE 1 +FLAGS ($Label1)")
    assert lines[0] == (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
                        b"$Label1)\r\n")
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted "
                               b"\\Seen \\Draft $Label1 \\*)]")
    assert lines[2].startswith(b"* 1 FETCH (FLAGS ($Label1")  # \\Recent may follow
    lines = second.command("NOOP")
    flags_at = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS ("))
    fetch_at = next(i for i, line in enumerate(lines) if b" FETCH " in line)
    assert b"$Label1" in lines[flags_at] and flags_at < fetch_at
    # A keyword already told is not told again; an existing one on new mail neither.
    first.command("STORE 1 -FLAGS ($Label1)")
    assert not any(line.startswith(b"* FLAGS") for line in second.command("NOOP"))
    first.command("STORE 1 +FLAGS ($Label1)")
    assert not any(line.startswith(b"* FLAGS") for line in second.command("NOOP"))


def test_idle_is_woken_by_an_smtp_delivery(mail_servers, imap_port, mailbox):
    client = session(imap_port, mailbox)
    client.send(b"i IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.sendmail("someone@remote.example", [mailbox.address], make_message(mailbox.address))
    client.sock.settimeout(5)
    assert client.readline() == b"* 1 EXISTS\r\n"
    assert client.readline() == b"* 1 RECENT\r\n"
    client.send(b"DONE\r\n")
    assert client.readline().startswith(b"i OK")


def test_idle_hears_changes_made_by_another_process(listener_process, mailbox):
    server = listener_process(["imap"])
    client = session(server.ports["imap"], mailbox)
    client.send(b"i IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    # This test process is another process for the listener: the change reaches
    # it through the HIGHESTMODSEQ poller (no Redis here) or Redis pub/sub.
    store.deliver([mailbox], make_message(mailbox.address))
    client.sock.settimeout(10)
    assert client.readline() == b"* 1 EXISTS\r\n"
    client.readline()
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [1], mode="add", flags=1)
    assert client.readline() == b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    client.send(b"DONE\r\n")
    assert client.readline().startswith(b"i OK")
    client.command("LOGOUT")
    assert server.terminate() == 0


def test_sigterm_says_bye_to_idle_sessions(listener_process, mailbox):
    server = listener_process(["imap"])
    client = session(server.ports["imap"], mailbox)
    client.send(b"i IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    assert server.terminate() == 0
    client.sock.settimeout(10)
    assert client.readline() == b"* BYE server shutting down\r\n"


def test_idlers_on_one_folder_share_the_read_of_a_delivery(mail_servers, imap_port, mailbox,
                                                          monkeypatch):
    reads, claims = [], []
    real_changes, real_claim = store.folder_changes, store.claim_recent
    monkeypatch.setattr(store, "folder_changes",
                        lambda *args, **kwargs: reads.append(args) or real_changes(*args, **kwargs))
    monkeypatch.setattr(store, "claim_recent",
                        lambda *args, **kwargs: claims.append(args) or real_claim(*args, **kwargs))
    idlers = [session(imap_port, mailbox) for _ in range(20)]
    for client in idlers:
        client.send(b"i IDLE\r\n")
        assert client.readline().startswith(b"+ ")
    reads.clear()
    claims.clear()
    with smtplib.SMTP("127.0.0.1", mail_servers.port("smtp")) as smtp:
        smtp.sendmail("someone@remote.example", [mailbox.address], make_message(mailbox.address))
    recent = []
    for client in idlers:
        client.sock.settimeout(5)
        assert client.readline() == b"* 1 EXISTS\r\n"
        recent.append(client.readline())
    # RFC 3501 §2.3.2: \Recent goes to exactly one session.
    assert sorted(recent) == [b"* 0 RECENT\r\n"] * 19 + [b"* 1 RECENT\r\n"]
    # Sessions woken by one change do not read it one after another (a group
    # woken late on a loaded machine may read once more, never each alone).
    assert len(reads) < 5 and len(claims) < 5
    for client in idlers:
        client.send(b"DONE\r\n")
        assert client.readline().startswith(b"i OK")


def test_select_starts_from_the_last_view_of_the_folder(imap_port, mailbox, monkeypatch):
    for _ in range(4):
        store.deliver([mailbox], make_message(mailbox.address))
    first = session(imap_port, mailbox)
    inbox = store.get_folder(mailbox, "INBOX")
    store.set_flags(inbox, [1], mode="add", flags=1, keywords=["$Label1"])
    store.set_flags(inbox, [2], mode="add", flags=8)
    store.expunge(inbox, [2])
    store.deliver([mailbox], make_message(mailbox.address))
    reads = []
    real_changes = store.folder_changes
    monkeypatch.setattr(store, "folder_changes",
                        lambda *args, **kwargs: reads.append(args) or real_changes(*args, **kwargs))
    second = session(imap_port, mailbox)
    # Only what changed since the first session's SELECT is read …
    assert reads and reads[0][1] > 0
    # … and the second session sees the folder as it is.
    lines = second.command("FETCH 1:* (UID FLAGS)")
    assert lines[:-1] == [b"* 1 FETCH (UID 1 FLAGS (\\Seen $Label1))\r\n",
                          b"* 2 FETCH (UID 3 FLAGS ())\r\n", b"* 3 FETCH (UID 4 FLAGS ())\r\n",
                          b"* 4 FETCH (UID 5 FLAGS (\\Recent))\r\n"]
    first.close()


def test_many_sessions_selecting_at_once_share_recent_exactly_once(imap_port, mailbox):
    clients = []
    for _ in range(12):
        client = RawIMAP(imap_port)
        client.login(mailbox.address, PASSWORD)
        clients.append(client)
    for round_ in range(3):
        store.deliver([mailbox], make_message(mailbox.address))
        for client in clients:
            client.send(b"s SELECT INBOX\r\n")
        recent = []
        for client in clients:
            client.sock.settimeout(10)
            lines = client.until("s")
            assert lines[-1].startswith(b"s OK [READ-WRITE]")
            recent += [line for line in lines if line.endswith(b" RECENT\r\n")]
        # RFC 3501 §2.3.2: each new message is \Recent in exactly one session.
        assert sorted(recent)[-1] == b"* 1 RECENT\r\n", round_
        assert recent.count(b"* 0 RECENT\r\n") == len(clients) - 1


def test_a_keyword_set_elsewhere_is_announced_before_this_sessions_store_shows_it(
        imap_port, mailbox):
    store.deliver([mailbox], make_message(mailbox.address))
    first, second = session(imap_port, mailbox), session(imap_port, mailbox)
    first.command("STORE 1 +FLAGS.SILENT ($Label3)")
    # The second session's own STORE answers with the message's flags, which now
    # hold $Label3: FLAGS must name it first (RFC 3501 §7.2.6).
    lines = second.command("STORE 1 +FLAGS (\\Seen)")
    flags_at = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS ("))
    fetch_at = next(i for i, line in enumerate(lines) if b" FETCH " in line)
    assert b"$Label3" in lines[flags_at] and flags_at < fetch_at
    # The same for the \Seen a FETCH of the body sets.
    second.command("STORE 1 -FLAGS.SILENT (\\Seen)")
    first.command("STORE 1 +FLAGS.SILENT ($Label4)")
    lines = second.command("FETCH 1 BODY[TEXT]")
    flags_at = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS ("))
    fetch_at = next(i for i, line in enumerate(lines) if b" FETCH " in line)
    assert b"$Label4" in lines[flags_at] and flags_at < fetch_at
    # A keyword no message has any more stays in FLAGS for new sessions of this
    # process: other clients may still show it on messages.
    first.command("STORE 1 -FLAGS.SILENT ($Label3 $Label4)")
    third = RawIMAP(imap_port)
    third.login(mailbox.address, PASSWORD)
    assert b"$Label3 $Label4" in third.command("SELECT INBOX")[0]


def test_commands_read_the_folder_again_only_after_news_of_a_change(imap_port, mailbox,
                                                                    monkeypatch):
    store.deliver([mailbox], make_message(mailbox.address))
    client = session(imap_port, mailbox)
    reads = []
    real_changes = store.folder_changes
    monkeypatch.setattr(store, "folder_changes",
                        lambda *args, **kwargs: reads.append(args) or real_changes(*args, **kwargs))
    for _ in range(3):
        lines = client.command("UID FETCH 1:* (FLAGS)")
        assert len(lines) == 2 and b" OK " in lines[-1]
    assert reads == []
    store.deliver([mailbox], make_message(mailbox.address))
    assert b"* 2 EXISTS\r\n" in client.command("UID FETCH 1:* (FLAGS)")
    assert len(reads) == 1
    # NOOP and CHECK are the client's polls (RFC 3501 §6.1.2, §6.4.1): they
    # look at the folder even without news, which from another process
    # without Redis comes only with the poller's tick.
    client.command("NOOP")
    client.command("CHECK")
    assert len(reads) == 3
