"""NOTIFY (RFC 5465) over a real socket: what a client hears without asking."""

from __future__ import annotations

import pytest

from apps.imap.notifications import news_items
from apps.imap.parser import EventGroup, ParseError, parse_command
from tests.imap.helpers import RawIMAP


def append(client: RawIMAP, folder: str, data: bytes = b"Subject: x\r\n\r\nx\r\n") -> None:
    client.command(f"APPEND {folder} {{{len(data)}+}}\r\n".encode() + data)


def test_status_indicator_tells_each_folder_now(raw):
    assert b" NOTIFY" in raw.command("CAPABILITY")[0]
    raw.command("CREATE Lists")
    append(raw, "Lists")
    # RFC 5465 §3.1: the items each event needs, before the tagged OK.
    lines = raw.command("NOTIFY SET STATUS (MAILBOXES Lists (MessageNew MessageExpunge))",
                        tag="n1")
    assert lines[0].startswith(b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY ")
    assert lines[1] == b"n1 OK NOTIFY completed\r\n"
    lines = raw.command("NOTIFY SET STATUS (SUBTREE Lists (MessageNew MessageExpunge "
                        "FlagChange))", tag="n2")
    assert lines[0].startswith(b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY ")
    assert b" HIGHESTMODSEQ " in lines[0]
    # Without STATUS, nothing before the OK.
    assert raw.command("NOTIFY SET (PERSONAL (MessageNew MessageExpunge))", tag="n3") == [
        b"n3 OK NOTIFY completed\r\n"]


def test_other_folders_are_told_by_status_without_a_command(raw, other):
    raw.command("CREATE Lists")
    raw.command("NOTIFY SET (SELECTED (MessageNew MessageExpunge)) "
                "(SUBTREE Lists (MessageNew MessageExpunge FlagChange))", tag="n1")
    append(other, "Lists")
    # No command in progress: the STATUS comes by itself (§5.2).
    assert raw.readline() == b"* STATUS Lists (UIDNEXT 2 MESSAGES 1)\r\n"
    other.command("SELECT Lists")
    other.command("STORE 1 +FLAGS.SILENT (\\Seen)")
    # Without CONDSTORE, a flag change is told by UNSEEN (§5.1).
    assert raw.readline() == b"* STATUS Lists (UNSEEN 0)\r\n"
    # \Deleted changes neither UNSEEN nor the counts: nothing to tell.
    other.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    assert raw.readline() == b"* STATUS Lists (UIDNEXT 2 MESSAGES 0)\r\n"
    # INBOX is not in the groups: its news is not told.
    append(other, "INBOX")
    assert raw.command("NOOP", tag="n9") == [b"n9 OK NOOP completed\r\n"]


def test_selected_folder_news_with_fetch_attributes(raw, other):
    append(raw, "INBOX")
    raw.command("SELECT INBOX")
    raw.command("NOTIFY SET (SELECTED (MessageNew (UID FLAGS) MessageExpunge))", tag="n1")
    append(other, "INBOX")
    # EXISTS, then the FETCH asked for (§5.2), all without a command.
    assert raw.readline() == b"* 2 EXISTS\r\n"
    assert raw.readline() == b"* 2 RECENT\r\n"
    assert raw.readline() == b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"
    other.command("SELECT INBOX")
    other.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    line = raw.readline()
    while b" FETCH (UID 1 FLAGS (\\Deleted" in line:
        line = raw.readline()  # the flag change that came before the expunge
    assert line == b"* 1 EXPUNGE\r\n"


def test_selected_delayed_holds_expunges_for_a_command(raw, other):
    append(raw, "INBOX")
    raw.command("SELECT INBOX")
    raw.command("NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge))", tag="n1")
    other.command("SELECT INBOX")
    other.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    append(other, "INBOX")
    # §6.1.2: no EXPUNGE until a command allows it; NOOP does.
    lines = raw.command("NOOP", tag="n2")
    assert b"* 1 EXPUNGE\r\n" in lines
    assert lines.index(b"* 1 EXPUNGE\r\n") < lines.index(b"n2 OK NOOP completed\r\n")


def test_folder_names_subscriptions_and_metadata(raw, other, monkeypatch):
    from apps.imap import notifications, session

    # The outline is looked at once a second: faster here.
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(session, "POLL_SECONDS", 0.2)
    raw.command("NOTIFY SET (PERSONAL (MailboxName SubscriptionChange MailboxMetadataChange))"
                " (MAILBOXES INBOX (ServerMetadataChange))", tag="n1")
    other.command("CREATE Work")
    assert raw.readline() == b'* LIST (\\HasNoChildren) "/" Work\r\n'
    other.command("SUBSCRIBE Work")
    assert raw.readline() == b'* LIST (\\HasNoChildren \\Subscribed) "/" Work\r\n'
    other.command('SETMETADATA Work (/private/comment "x")')
    assert raw.readline() == b"* METADATA Work /private/comment\r\n"
    other.command('SETMETADATA "" (/shared/admin "y")')
    assert raw.readline() == b'* METADATA "" /shared/admin\r\n'
    other.command("RENAME Work Play")
    assert raw.readline() == \
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Play ("OLDNAME" (Work))\r\n'
    other.command("DELETE Play")
    assert raw.readline() == b'* LIST (\\NonExistent \\Subscribed) "/" Play\r\n'
    # This session's own changes are not told back (§5).
    assert raw.command("CREATE Mine", tag="n2") == [b"n2 OK CREATE completed\r\n"]
    # NOTIFY NONE: nothing more.
    raw.command("NOTIFY NONE", tag="n3")
    other.command("CREATE Quiet")
    assert raw.command("NOOP", tag="n4") == [b"n4 OK NOOP completed\r\n"]


def test_refusals(raw):
    # RFC 5465 §3.1: an event we do not support is NO [BADEVENT (supported)].
    line = raw.command("NOTIFY SET (PERSONAL (AnnotationChange))", tag="b1")[-1]
    assert line.startswith(b"b1 NO [BADEVENT (MessageNew MessageExpunge FlagChange "
                           b"MailboxName SubscriptionChange MailboxMetadataChange "
                           b"ServerMetadataChange)]")
    # §6.1: SELECTED takes message events only, and comes once; FETCH
    # attributes only there.
    for bad in ("NOTIFY SET (SELECTED (MailboxName))",
                "NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (SELECTED-DELAYED NONE)",
                "NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))",
                "NOTIFY SET (ELSEWHERE (MessageNew))", "NOTIFY SET", "NOTIFY"):
        assert raw.command(bad, tag="b2")[-1].startswith(b"b2 BAD"), bad


def test_notify_parses():
    args = parse_command(b"a NOTIFY SET STATUS (selected (MessageNew (uid "
                         b"body.peek[header.fields (from)]) messageexpunge)) "
                         b"(subtree (Lists Other) NONE)\r\n").args
    selected, subtree = args["groups"]
    assert args["status"] is True
    assert selected.filter == "SELECTED" and selected.events == ("MessageNew", "MessageExpunge")
    assert [a.name for a in selected.fetch] == ["UID", "BODY.PEEK"]
    assert subtree == EventGroup("SUBTREE", ("Lists", "Other"), ())
    assert parse_command(b"a NOTIFY NONE\r\n").args == {"groups": None, "status": False}
    for bad in (b"a NOTIFY SET (PERSONAL ())\r\n", b"a NOTIFY SET (SUBTREE (MessageNew))\r\n",
                b"a NOTIFY MAYBE\r\n"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_status_news_follows_the_events_asked():
    before = {"MESSAGES": 1, "UIDNEXT": 2, "UIDVALIDITY": 7, "HIGHESTMODSEQ": 3, "UNSEEN": 1}
    grown = {**before, "MESSAGES": 2, "UIDNEXT": 3, "HIGHESTMODSEQ": 4}
    flagged = {**before, "HIGHESTMODSEQ": 4, "UNSEEN": 0}
    both = {"MessageNew", "MessageExpunge", "FlagChange"}
    assert news_items(both, before, grown, condstore=False, qresync=False) == [
        "UIDNEXT", "MESSAGES"]
    assert news_items(both, before, grown, condstore=True, qresync=False) == [
        "UIDNEXT", "MESSAGES", "HIGHESTMODSEQ"]
    assert news_items(both, before, flagged, condstore=True, qresync=False) == [
        "HIGHESTMODSEQ", "UIDVALIDITY"]
    assert news_items(both, before, flagged, condstore=False, qresync=False) == ["UNSEEN"]
    assert news_items({"MessageNew", "MessageExpunge"}, before, flagged,
                      condstore=True, qresync=False) == []
    assert news_items(both, before, {**before, "UIDVALIDITY": 8},
                      condstore=False, qresync=False) == ["UIDVALIDITY"]


def test_flag_change_in_the_selected_folder_carries_the_uid(raw, other):
    append(raw, "INBOX")
    append(raw, "INBOX")
    raw.command("SELECT INBOX")
    raw.command("NOTIFY SET (SELECTED (MessageNew MessageExpunge FlagChange))", tag="n1")
    other.command("SELECT INBOX")
    other.command("STORE 2 +FLAGS.SILENT (\\Flagged)")
    # RFC 5465 §5.1: the FETCH MUST include UID and FLAGS, CONDSTORE or not.
    assert raw.readline() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n"


def test_folder_tree_changes_tell_the_parent_and_not_the_renamed_children(
        raw, other, monkeypatch):
    from apps.imap import notifications, session

    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(session, "POLL_SECONDS", 0.2)
    other.command("CREATE Work")
    raw.command("NOTIFY SET (PERSONAL (MailboxName))", tag="n1")
    # RFC 5465 §5.4: a created folder and its direct parent are affected.
    other.command("CREATE Work/Sub")
    assert raw.readline() == b'* LIST (\\HasNoChildren) "/" Work/Sub\r\n'
    assert raw.readline() == b'* LIST (\\HasChildren) "/" Work\r\n'
    # Children renamed along with their parent: no events of their own.
    other.command("RENAME Work Play")
    assert raw.readline() == b'* LIST (\\HasChildren) "/" Play ("OLDNAME" (Work))\r\n'
    other.command("DELETE Play/Sub")
    assert raw.readline() == b'* LIST (\\NonExistent) "/" Play/Sub\r\n'
    assert raw.readline() == b'* LIST (\\HasNoChildren) "/" Play\r\n'
    assert raw.command("NOOP", tag="n2") == [b"n2 OK NOOP completed\r\n"]


def test_notify_sessions_of_a_mailbox_share_their_reads(imap_port, mailbox, monkeypatch):
    import time

    from apps.imap import notifications, session
    from apps.store import services as store
    from tests.factories import PASSWORD

    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(session, "POLL_SECONDS", 0.2)
    store.create_folder(mailbox, "Lists", subscribed=False)
    clients = []
    for _ in range(10):
        client = RawIMAP(imap_port)
        client.login(mailbox.address, PASSWORD)
        client.command("NOTIFY SET (MAILBOXES Lists (MessageNew MessageExpunge)) "
                       "(PERSONAL (MailboxName))", tag="n1")
        clients.append(client)
    statuses, outlines = [], []
    read_status, read_outline = store.folder_status, notifications.mailbox_outline

    def counted_status(*args, **kwargs):  # type: ignore[no-untyped-def]
        statuses.append(args)
        return read_status(*args, **kwargs)

    def counted_outline(*args, **kwargs):  # type: ignore[no-untyped-def]
        outlines.append(args)
        return read_outline(*args, **kwargs)

    monkeypatch.setattr(store, "folder_status", counted_status)
    monkeypatch.setattr(notifications, "mailbox_outline", counted_outline)
    time.sleep(1)
    # Ten sessions looking at the outline every 0.2 s: one read per period
    # for all of them (about 5), not one each (50).
    looks = len(outlines)
    assert 0 < looks < 25
    store.deliver_batch([store.DeliveryRequest([mailbox.pk], b"Subject: x\r\n\r\nx\r\n",
                                               folder="Lists", fallback_to_inbox=False)])
    for client in clients:
        assert client.readline() == b"* STATUS Lists (UIDNEXT 2 MESSAGES 1)\r\n"
    # One delivery: one STATUS read for the ten sessions told of it.
    assert len(statuses) == 1
    for client in clients:
        client.close()


def test_search_update_fetches_new_messages_joining_the_result(raw, other):
    append(raw, "INBOX", b"Subject: hello\r\n\r\nx\r\n")
    raw.command("SELECT INBOX")
    lines = raw.command("SEARCH RETURN (COUNT UPDATE (UID BODY.PEEK[HEADER.FIELDS "
                        "(SUBJECT)])) SUBJECT boss", tag="s1")
    assert lines[0] == b'* ESEARCH (TAG "s1") COUNT 0\r\n'
    append(other, "INBOX", b"Subject: from the boss\r\n\r\nx\r\n")
    append(other, "INBOX", b"Subject: other\r\n\r\nx\r\n")
    lines = raw.command("NOOP", tag="n1")
    # RFC 5465 §7: EXISTS, then the FETCH asked for of the new message that
    # joined, then the ESEARCH ADDTO; none for the one that did not join.
    assert lines[0] == b"* 3 EXISTS\r\n"
    fetches = [line for line in lines if b" FETCH " in line]
    assert fetches == [b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {26}\r\n"
                       b"Subject: from the boss\r\n\r\n)\r\n"]
    addto = lines.index(b'* ESEARCH (TAG "s1") ADDTO (0 2)\r\n')
    assert lines.index(fetches[0]) < addto
    # A message joining by a flag change gets no FETCH (§7).
    raw.command("CANCELUPDATE \"s1\"")
    raw.command("SEARCH RETURN (UPDATE (UID)) FLAGGED", tag="s2")
    other.command("SELECT INBOX")
    other.command("STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines = raw.command("NOOP", tag="n2")
    assert b'* ESEARCH (TAG "s2") ADDTO (0 1)\r\n' in lines
    assert not any(line.startswith(b"* 1 FETCH (UID 1)") for line in lines)


def test_update_return_option_parses_its_fetch_attributes():
    # RFC 5465 §8 modifier-update: the list right after UPDATE, or after a space (§7).
    for text in (b"a SEARCH RETURN (COUNT UPDATE (UID FLAGS)) ALL\r\n",
                 b"a SEARCH RETURN (UPDATE(UID FLAGS) COUNT) ALL\r\n",
                 b"a UID SORT RETURN (UPDATE (UID FLAGS)) (DATE) UTF-8 ALL\r\n"):
        args = parse_command(text).args
        assert "UPDATE" in args["return"]
        assert [att.name for att in args["update_fetch"]] == ["UID", "FLAGS"]
    assert parse_command(b"a SEARCH RETURN (UPDATE) ALL\r\n").args["update_fetch"] == ()
    with pytest.raises(ParseError):
        parse_command(b"a SEARCH RETURN (UPDATE (NOSUCH)) ALL\r\n")
