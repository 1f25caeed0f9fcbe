"""Message commands over a real socket: APPEND, FETCH, STORE, SEARCH, COPY, MOVE,
EXPUNGE, CLOSE/UNSELECT, CONDSTORE/QRESYNC."""

from __future__ import annotations

import re

from django.db.backends.utils import CursorWrapper
from imapclient import IMAPClient

from apps.store.models import Flag, Message
from tests.factories import PASSWORD
from tests.imap.helpers import RawIMAP

MULTIPART = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org, carol@example.org\r\n"
    b"Subject: Report\r\nDate: Tue, 05 Mar 2024 10:00:00 +0100\r\n"
    b"Message-ID: <r1@example.org>\r\nX-Tag: Quarterly\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Numbers are UP this quarter.\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@example.org\r\nSubject: Inner\r\n\r\ninner body\r\n"
    b"--XX--\r\nepilogue\r\n"
)
SIMPLE = (b"From: Dave <dave@example.net>\r\nTo: alice@example.test\r\nSubject: lunch?\r\n"
          b"Date: Wed, 06 Mar 2024 12:00:00 +0000\r\n\r\nSee you at noon.\r\n")


def append(raw: RawIMAP, data: bytes, folder: str = "INBOX", flags: str = "") -> bytes:
    flag_text = f" ({flags})" if flags else ""
    return raw.command(f"APPEND {folder}{flag_text} {{{len(data)}+}}\r\n".encode()[:-2]
                       + b"\r\n" + data)[-1]


def test_append_forms_and_their_errors(raw, mailbox):
    line = append(raw, SIMPLE, flags="\\Seen $Important")
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ 1\] APPEND completed", line)
    # Synchronising literal with an internal date.
    raw.send(b'a APPEND Sent (\\Draft) "05-Mar-2024 10:11:12 +0100" {%d}\r\n' % len(SIMPLE))
    assert raw.readline().startswith(b"+ ")
    raw.send(SIMPLE + b"\r\n")
    assert raw.until("a")[-1].startswith(b"a OK [APPENDUID")
    message = Message.objects.get(folder__name="Sent")
    assert message.flags == Flag.DRAFT and message.internal_date.hour == 9
    assert append(raw, SIMPLE, folder="Nowhere").split(b" ", 3)[1:3] == [b"NO", b"[TRYCREATE]"]
    # MULTIAPPEND: both or none.
    line = raw.command(b"APPEND INBOX {3+}\r\nab\n {3+}\r\ncd\n")[-1]
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ 2:3\]", line)
    assert raw.command(b"APPEND INBOX {0+}\r\n")[-1].split(b" ")[1] == b"NO"
    assert Message.objects.filter(folder__mailbox=mailbox, folder__name="INBOX").count() == 3


def test_select_and_examine_report_the_folder(raw):
    append(raw, SIMPLE, flags="\\Seen")
    append(raw, SIMPLE, flags="$Work")
    lines = raw.command("SELECT INBOX")
    text = b"".join(lines)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n" in text
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)]" \
        in text
    assert b"* 2 EXISTS\r\n" in text and b"* 2 RECENT\r\n" in text
    assert b"* OK [UNSEEN 2]" in text and b"* OK [UIDNEXT 3]" in text
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", text)
    assert re.search(rb"\* OK \[HIGHESTMODSEQ \d+\]", text)
    assert lines[-1].startswith(b"t4 OK [READ-WRITE]")
    # \Recent went to the first session only.
    lines = raw.command("EXAMINE INBOX")
    assert b"* 0 RECENT\r\n" in lines and lines[-1].startswith(b"t5 OK [READ-ONLY]")
    assert b"* OK [CLOSED]" in lines[0]
    assert raw.command("STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"t6 NO [READ-ONLY]")
    assert raw.command("SELECT Nowhere")[-1].startswith(b"t7 NO [NONEXISTENT]")
    assert raw.command("FETCH 1 FLAGS")[-1].startswith(b"t8 BAD")  # deselected by the failure


def test_fetch_items_and_sections(raw):
    append(raw, MULTIPART)
    raw.command("SELECT INBOX")
    lines = raw.command("FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert lines[0].startswith(
        b'* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d INTERNALDATE "' % len(MULTIPART))
    assert b'ENVELOPE ("Tue, 05 Mar 2024 10:00:00 +0100" "Report" (("Alice" NIL "alice" ' \
           b'"example.org")) ' in lines[0]
    assert b'(NIL NIL "bob" "example.org")(NIL NIL "carol" "example.org")' in lines[0]
    body = raw.command("FETCH 1 BODYSTRUCTURE")[0]
    assert body.startswith(b'* 1 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL '
                           b'NIL "7BIT" 28 0 NIL NIL NIL NIL)("MESSAGE" "RFC822" NIL NIL NIL '
                           b'"7BIT" 53 (NIL "Inner" ')
    assert b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL))\r\n' in body
    short = raw.command("FETCH 1 BODY")[0]
    assert short.endswith(b' "MIXED"))\r\n')
    sections = {
        "BODY.PEEK[]": MULTIPART,
        # The line break before a boundary belongs to the boundary (RFC 2046 §5.1.1).
        "BODY.PEEK[1]": b"Numbers are UP this quarter.",
        "BODY.PEEK[1.MIME]": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        "BODY.PEEK[2.HEADER]": b"From: inner@example.org\r\nSubject: Inner\r\n\r\n",
        "BODY.PEEK[2.TEXT]": b"inner body",
        "BODY.PEEK[2.1]": b"inner body",
        "BODY.PEEK[HEADER.FIELDS (Subject x-tag)]":
            b"Subject: Report\r\nX-Tag: Quarterly\r\n\r\n",
        "BODY.PEEK[TEXT]<0.8>": b"preamble",
        "BODY.PEEK[]<5.10>": MULTIPART[5:15],
        "BODY.PEEK[9]": b"",
    }
    for item, expected in sections.items():
        line = raw.command(f"FETCH 1 ({item})")[0]
        label = item.replace(".PEEK", "")  # field names are echoed as asked
        label = re.sub(r"<(\d+)\.\d+>", r"<\1>", label)
        assert line == b"* 1 FETCH (" + label.encode() + b" {%d}\r\n" % len(expected) \
            + expected + b")\r\n", item
    headers = raw.command("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Content-Type X-Tag From)]")[0]
    headers = headers.split(b"}\r\n", 1)[1]
    assert b"X-Tag" not in headers and b"Subject: Report" in headers and b"From:" not in headers
    rfc822 = raw.command("FETCH 1 (RFC822.HEADER RFC822.TEXT)")[0]
    assert b"RFC822.HEADER {" in rfc822 and b"RFC822.TEXT {" in rfc822
    # Not PEEK: \Seen is set and the new flags come with the data.
    assert raw.command("FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    raw.command("STORE 1 -FLAGS.SILENT (\\Seen)")
    line = raw.command("FETCH 1 BODY[1]")[0]
    assert line.startswith(b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[1] {28}") or \
        (b"FLAGS (\\Seen \\Recent)" in line)


def test_fetch_and_search_use_a_bounded_number_of_queries(raw, monkeypatch):
    for index in range(30):
        append(raw, SIMPLE.replace(b"lunch?", b"lunch %d" % index))
    raw.command("SELECT INBOX")
    statements: list[str] = []
    original = CursorWrapper.execute

    def counting(self, sql, params=None):  # type: ignore[no-untyped-def]
        statements.append(sql)  # list.append is atomic: the session runs in threads
        return original(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    lines = raw.command("FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[HEADER] RFC822.SIZE)")
    assert len(lines) == 31 and b"lunch 29" in lines[29]
    # One for the 30 rows; the folder did not change, so no more.
    assert len([s for s in statements if "store_message" in s]) == 1
    statements.clear()
    raw.command("FETCH 1:* (FLAGS UID)")
    assert [s for s in statements if "store_message" in s] == []
    statements.clear()
    assert raw.command("SEARCH SUBJECT lunch")[0].startswith(b"* SEARCH 1 2 3")
    assert len([s for s in statements if "store_message" in s]) == 1


def test_store_forms_and_condstore(raw):
    for _ in range(3):
        append(raw, SIMPLE)
    raw.command("SELECT INBOX")
    lines = raw.command("STORE 1 +FLAGS (\\Flagged $A)")
    # RFC 3501 §7.2.6: a keyword new to the folder is in FLAGS before a FETCH names it.
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $A)\r\n"
    assert lines[2] == b"* 1 FETCH (FLAGS (\\Flagged $A \\Recent))\r\n"
    assert raw.command("STORE 1 -FLAGS ($A)")[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
    assert raw.command("STORE 1:2 FLAGS.SILENT (\\Answered)")[0].startswith(b"t")
    lines = raw.command("UID STORE 2 +FLAGS (\\Seen)")
    assert lines[0] == b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Answered \\Recent))\r\n"
    assert raw.command("STORE 1 +FLAGS (\\Recent)")[-1].split(b" ")[1] == b"OK"
    assert raw.command("STORE 1 +FLAGS (\\Bogus)")[-1].split(b" ")[1] == b"BAD"
    # CONDSTORE: MODSEQ in the answers, UNCHANGEDSINCE refuses stale changes.
    modseq = max(int(n) for n in re.findall(
        rb"MODSEQ \((\d+)\)", b"".join(raw.command("FETCH 1:* (MODSEQ)"))))
    raw.command("STORE 3 +FLAGS.SILENT (\\Draft)")
    lines = raw.command(f"STORE 1,3 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Deleted)")
    assert lines[-1].startswith(b"t") and b"OK [MODIFIED 3]" in lines[-1]
    assert re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(.*\\Deleted.*\) MODSEQ \(\d+\)\)", lines[0])
    lines = raw.command(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert [line.split(b" ")[1] for line in lines[:-1]] == [b"1", b"3"]


def test_search_keys(raw):
    append(raw, MULTIPART, flags="\\Flagged")
    append(raw, SIMPLE, flags="\\Seen $Lunch")
    append(raw, b"From: x@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
                b"Date: Thu, 07 Mar 2024 09:00:00 +0000\r\n\r\n" + b"z" * 3000 + b"\r\n")
    raw.command("SELECT INBOX")

    def search(criteria: str | bytes, prefix: str = "") -> list[int]:
        if isinstance(criteria, str):
            criteria = criteria.encode()
        lines = raw.command(prefix.encode() + b"SEARCH " + criteria)
        assert lines[-1].split(b" ")[1] == b"OK", lines
        found = [line for line in lines if line.startswith(b"* SEARCH")]
        numbers = found[0].split(b" (MODSEQ")[0].split()[2:]
        return [int(n) for n in numbers]

    assert search("ALL") == [1, 2, 3]
    assert search("FLAGGED") == [1] and search("UNSEEN") == [1, 3]
    assert search("KEYWORD $lunch") == [2] and search("UNKEYWORD $Lunch") == [1, 3]
    assert search("FROM alice") == [1] and search('FROM "DAVE@EXAMPLE"') == [2]
    assert search("TO carol") == [1] and search("CC carol") == []
    assert search(b'CHARSET UTF-8 SUBJECT {6+}\r\ngr\xc3\xbc\xc3\x9f') == [3]
    assert search("BODY quarter") == [1] and search("BODY NOON") == [2]
    assert search("TEXT report") == [1]
    assert search("HEADER X-Tag quarterly") == [1] and search('HEADER X-Tag ""') == [1]
    assert search("LARGER 2000") == [3] and search("SMALLER 200") == [2]
    assert search("SENTON 6-Mar-2024") == [2] and search("SENTBEFORE 6-Mar-2024") == [1]
    assert search("SENTSINCE 6-Mar-2024") == [2, 3]
    assert search("SINCE 1-Jan-2020") == [1, 2, 3] and search("BEFORE 1-Jan-2020") == []
    assert search("OR FLAGGED SEEN") == [1, 2] and search("NOT (FLAGGED)") == [2, 3]
    assert search("2:* UID 1:2") == [2] and search("UID 2:*", "UID ") == [2, 3]
    assert search("RECENT NEW") == [1, 3] and search("OLD") == []
    assert search("MODSEQ 1") == [1, 2, 3]
    assert re.search(rb"\(MODSEQ \d+\)\r\n$", raw.command("SEARCH MODSEQ 1")[0])
    lines = raw.command("SEARCH CHARSET KOI8-R ALL")
    assert b"NO [BADCHARSET" in lines[-1]
    # ESEARCH and SEARCHRES
    lines = raw.command("UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert re.match(rb'\* ESEARCH \(TAG "t\d+"\) UID MIN 1 MAX 3 ALL 1,3 COUNT 2', lines[0])
    assert raw.command("SEARCH RETURN (SAVE) FLAGGED")[0].startswith(b"t")
    assert raw.command("FETCH $ (UID)")[0] == b"* 1 FETCH (UID 1)\r\n"


def test_copy_move_expunge_close_unselect(raw, mailbox):
    for _ in range(4):
        append(raw, SIMPLE)
    raw.command("CREATE Archive/2024")
    raw.command("SELECT INBOX")
    lines = raw.command("COPY 1:2 Archive/2024")
    assert re.match(rb"t\d+ OK \[COPYUID \d+ 1:2 1:2\] COPY completed", lines[-1])
    assert raw.command("COPY 1 Nowhere")[-1].split(b" ")[2] == b"[TRYCREATE]"
    lines = raw.command("UID MOVE 2:3 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 2:3 1:2\]", lines[0])
    assert lines[1:3] == [b"* 2 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert lines[-1].endswith(b"OK MOVE completed\r\n")
    raw.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    raw.command("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("UID EXPUNGE 4")[0] == b"* 2 EXPUNGE\r\n"
    assert raw.command("EXPUNGE")[0] == b"* 1 EXPUNGE\r\n"
    assert b"* 0 EXISTS" not in b"".join(raw.command("NOOP"))
    raw.command("SELECT Archive/2024")
    raw.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("UNSELECT")[-1].endswith(b"OK UNSELECT completed\r\n")
    raw.command("SELECT Archive/2024")
    assert raw.command("CLOSE") [0].endswith(b"OK CLOSE completed\r\n")
    lines = raw.command("STATUS Archive/2024 (MESSAGES)")
    assert lines[0] == b"* STATUS Archive/2024 (MESSAGES 1)\r\n"
    inbox = Message.objects.filter(folder__mailbox=mailbox)
    assert inbox.count() == 3  # 1 in the archive, 2 in Trash


def test_qresync_select_reports_vanished_and_changed(raw):
    for _ in range(3):
        append(raw, SIMPLE)
    lines = raw.command("SELECT INBOX")
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", b"".join(lines)).group(1).decode()
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(lines)).group(1))
    raw.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    raw.command("EXPUNGE")
    raw.command("STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert raw.command("ENABLE QRESYNC")[-1].split(b" ")[1] == b"BAD"  # not in SELECTED
    raw.command("UNSELECT")
    assert raw.command("ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
    lines = raw.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
    text = b"".join(lines)
    assert b"* VANISHED (EARLIER) 2\r\n" in text
    assert re.search(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", text)
    assert not re.search(rb"\* 2 FETCH", text)
    lines = raw.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 2\r\n"


def test_imapclient_round_trip(imap_port, mailbox):
    with IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=20) as client:
        client.login(mailbox.address, PASSWORD)
        client.append("INBOX", MULTIPART, flags=[b"\\Seen"])
        client.select_folder("INBOX")
        uids = client.search(["FROM", "alice"])
        data = client.fetch(uids, ["ENVELOPE", "BODY.PEEK[]", "BODYSTRUCTURE", "FLAGS"])
        entry = data[uids[0]]
        assert entry[b"BODY[]"] == MULTIPART
        assert entry[b"ENVELOPE"].subject == b"Report"
        assert entry[b"BODYSTRUCTURE"].is_multipart
        client.add_flags(uids, [b"\\Flagged"])
        assert b"\\Flagged" in client.get_flags(uids)[uids[0]]
        client.move(uids, "Archive")
        assert client.search() == []
        assert client.folder_status("Archive", [b"MESSAGES"])[b"MESSAGES"] == 1


def test_binary_fetch_decodes_parts(raw):
    # RFC 3516: BINARY[part] undoes the transfer encoding; NUL needs a literal8.
    message = (b"Subject: bin\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
               b"--b\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n"
               b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: "
               b"quoted-printable\r\n\r\ncaf=C3=A9\r\n"
               b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-rot13\r\n\r\n"
               b"uryyb\r\n--b--\r\n")
    append(raw, message)
    raw.command("SELECT INBOX")
    assert b"BINARY" in raw.command("CAPABILITY")[0]
    assert raw.command("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2])")[0] == \
        b"* 1 FETCH (BINARY[1] ~{4}\r\n\x00\x01\x02\x03 BINARY.SIZE[2] 5)\r\n"
    assert raw.command("FETCH 1 BINARY.PEEK[2]<1.3>")[0] == \
        b"* 1 FETCH (BINARY[2]<1> {3}\r\naf\xc3)\r\n"
    assert b"NO [UNKNOWN-CTE]" in raw.command("FETCH 1 BINARY.PEEK[3]")[-1]
    # A message with a NUL byte can be appended as a literal8.
    line = raw.command(b"APPEND INBOX ~{9+}\r\nA: b\r\n\r\n\x00")[-1]
    assert b"OK [APPENDUID" in line


def test_imap4rev2_after_enable(raw):
    for flags in ("\\Seen", ""):
        append(raw, SIMPLE, flags=flags)
    assert b" IMAP4rev2 " in raw.command("CAPABILITY")[0]
    assert raw.command("ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2\r\n"
    text = b"".join(raw.command("SELECT INBOX"))
    assert b"RECENT" not in text and b"[UNSEEN" not in text
    assert b'* LIST () "/" INBOX\r\n' in text
    lines = raw.command("SEARCH UNSEEN")
    assert re.match(rb'\* ESEARCH \(TAG "t\d+"\) ALL 2\r\n', lines[0])
    assert b"\\Recent" not in raw.command("FETCH 1:* FLAGS")[0]
    lines = raw.command(b"APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    assert lines[0] == b"* 3 EXISTS\r\n" and b"RECENT" not in b"".join(lines)


def test_sort_and_thread(raw):
    for subject, day in (("b", 3), ("Re: a", 2), ("a", 1)):
        append(raw, SIMPLE.replace(b"Subject: lunch?", b"Subject: " + subject.encode())
               .replace(b"06 Mar", f"0{day} Mar".encode()))
    raw.command("SELECT INBOX")
    assert raw.command("SORT (SUBJECT REVERSE DATE) UTF-8 ALL")[0] == b"* SORT 2 3 1\r\n"
    assert raw.command("UID SORT (REVERSE ARRIVAL) US-ASCII NOT SUBJECT b")[0] == \
        b"* SORT 3 2\r\n"
    assert raw.command("THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (3 2)(1)\r\n"
    assert raw.command("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (3 2)(1)\r\n"
    assert raw.command("THREAD X-GUESS UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"


def test_sequence_numbers_past_the_last_message_are_bad(raw):
    # RFC 3501 §6.4.8 / RFC 9051 §6.4.8: a message sequence number past the
    # last message is an error, a UID range names what exists. imaptest's
    # urlauth2 FETCHes 1:2 of a folder it never appended to; Dovecot answers
    # that BAD too ("Invalid messageset") and skips the group only because
    # its configuration lacks URLAUTH.
    raw.command("CREATE Empty")
    raw.command("SELECT Empty")
    for command in ("FETCH 1:2 (UID BODY[])", "FETCH * FLAGS", "STORE 1 +FLAGS (\\Seen)",
                    "COPY 1 INBOX"):
        assert raw.command(command)[-1].split()[1] == b"BAD", command
    [done] = raw.command("UID FETCH 1:* FLAGS")
    assert done.split()[1] == b"OK"
    append(raw, SIMPLE, "Empty")
    raw.command("NOOP")
    assert raw.command("FETCH 1:2 FLAGS")[-1].split()[1] == b"BAD"
    lines = raw.command("FETCH 1 FLAGS")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (") and lines[-1].split()[1] == b"OK"
