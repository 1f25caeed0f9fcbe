"""The webmail's pages through Django's test client: what each shows, what
each action does to the store (as an IMAP client would see it), and that
nothing of another mailbox can be reached."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.store import services as store
from apps.store.models import Flag, Folder, Message
from tests.factories import make_mailbox
from tests.webmail.conftest import build

MAIL = Path(__file__).parent / "mail"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def with_attachment(subject: str = "Report") -> bytes:
    message = EmailMessage()
    message["From"] = "Ann <ann@far.example>"
    message["To"] = "bob@here.example"
    message["Subject"] = subject
    message.set_content("The report is attached.")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return bytes(message)


def folder_named(mailbox, name: str) -> Folder:
    return store.get_folder(mailbox, name)


def uids(mailbox, name: str) -> list[int]:
    return sorted(Message.objects.filter(folder=folder_named(mailbox, name))
                  .values_list("uid", flat=True))


# --- list ----------------------------------------------------------------------


def test_mail_opens_on_the_inbox_newest_first(reader: Client, deliver) -> None:
    deliver(subject="Older one", body="First words of the older one.")
    deliver(subject="Newer one", body="> a quote\nFresh words here.", flags=Flag.SEEN)
    page = reader.get("/mail/").content.decode()
    assert "<h1 id=\"list-title\">Inbox" in page
    assert page.index("Newer one") < page.index("Older one")
    assert "Fresh words here." in page  # snippet, quoted line left out
    assert "a quote" not in page
    assert "First words of the older one." in page
    # The sidebar: special folders first, unread count of the Inbox.
    side = page[page.index('class="folder-list"'):]
    assert [side.index(n) for n in ("Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash")] \
        == sorted(side.index(n) for n in ("Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash"))
    assert 'aria-label="1 unread"' in side
    assert 'href="/mail/compose/"' in page and 'href="/mail/settings/"' in page


def test_list_pages_and_sorts(reader: Client, deliver, mailbox) -> None:
    for number in range(55):
        deliver(subject=f"Number {number:02d}")
    inbox = folder_named(mailbox, "INBOX")
    first = reader.get(f"/mail/folder/{inbox.pk}/").content.decode()
    assert "Number 54" in first and "Number 05" in first and "Number 04" not in first
    assert "Page 1 of 2" in first
    second = reader.get(f"/mail/folder/{inbox.pk}/?page=2").content.decode()
    assert "Number 04" in second and "Number 05" not in second
    oldest = reader.get(f"/mail/folder/{inbox.pk}/?sort=oldest").content.decode()
    assert oldest.index("Number 00") < oldest.index("Number 01")
    assert reader.get(f"/mail/folder/{inbox.pk}/?page=x&sort=nonsense").status_code == 200


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_takes_the_same_queries_whatever_the_folder_size(reader: Client, deliver,
                                                               mailbox) -> None:
    inbox = folder_named(mailbox, "INBOX")
    url = f"/mail/folder/{inbox.pk}/"
    deliver(data=with_attachment())
    deliver(subject="one")
    # Unread counts are counted afresh after a change, then cached: both ways.
    few = (count_queries(reader, url), count_queries(reader, url))
    for number in range(80):
        deliver(data=with_attachment(f"Attached {number}") if number % 2 else
                build(subject=f"Plain {number}"))
    store.create_folder(mailbox, "Projects/Alpha")
    assert (count_queries(reader, url), count_queries(reader, url)) == few
    assert count_queries(reader, url + "?page=2") == few[1]


# --- reading ---------------------------------------------------------------------


def test_reading_plain_text_marks_it_seen(reader: Client, deliver) -> None:
    message = deliver(subject="Plans", body="Map: https://example.org/map?a=1&b=2\n"
                                            "> what you wrote\n> before\nSee you.")
    page = reader.get(f"/mail/message/{message.pk}/").content.decode()
    assert "<h2 class=\"reading-subject\">Plans</h2>" in page
    assert 'href="https://example.org/map?a=1&amp;b=2"' in page
    assert "<summary>Quoted text</summary>" in page
    assert f'href="/mail/compose/?reply={message.pk}"' in page
    assert f'href="/mail/compose/?reply_all={message.pk}"' in page
    assert f'href="/mail/compose/?forward={message.pk}"' in page
    message.refresh_from_db()
    assert message.flags & Flag.SEEN


def test_base64_and_quoted_printable_text_reads_as_written(reader: Client, deliver) -> None:
    for encoding in ("base64", "quoted-printable"):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            "ann@far.example", "bob@here.example", encoding)
        message.set_content("Grüße aus Köln = 100 % sicher", cte=encoding)
        assert f"Content-Transfer-Encoding: {encoding}".encode() in message.as_bytes()
        found = deliver(message.as_bytes().replace(b"\n", b"\r\n"))
        page = reader.get(f"/mail/message/{found.pk}/").content.decode()
        # The reading pane's text, not the list's preview beside it.
        shown = re.search(r'<div class="mail-text">(.*?)</div>', page, re.DOTALL)
        assert shown and "Grüße aus Köln = 100 % sicher" in shown.group(1), encoding


def test_html_is_framed_sanitised_with_its_own_policy(reader: Client, deliver) -> None:
    message = deliver(subject="News", html='<p onclick="x()">Hello <b>there</b></p>'
                      '<img src="https://tracker.example/p.gif"><script>alert(1)</script>')
    page = reader.get(f"/mail/message/{message.pk}/").content.decode()
    assert f'src="/mail/message/{message.pk}/body/"' in page
    assert 'sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox"' in page
    assert "Show images" in page
    assert "tracker.example" not in page
    body = reader.get(f"/mail/message/{message.pk}/body/")
    assert body["X-Frame-Options"] == "SAMEORIGIN"
    assert body["Content-Security-Policy"].startswith("default-src 'none'; img-src 'self' data:;")
    html = body.content.decode()
    assert "<p>Hello <b>there</b></p>" in html
    assert "script" not in html and "onclick" not in html and "tracker.example" not in html
    shown = reader.get(f"/mail/message/{message.pk}/body/?images=1")
    assert 'src="https://tracker.example/p.gif"' in shown.content.decode()
    assert "https:" in shown["Content-Security-Policy"]
    framed = reader.get(f"/mail/message/{message.pk}/?images=1").content.decode()
    assert f'src="/mail/message/{message.pk}/body/?images=1"' in framed
    assert "Show images" not in framed


def test_attachment_downloads_byte_for_byte(reader: Client, deliver) -> None:
    message = deliver(data=with_attachment())
    page = reader.get(f"/mail/message/{message.pk}/").content.decode()
    assert "report.pdf" in page and "application/pdf" in page
    download = reader.get(f"/mail/message/{message.pk}/part/2/")
    assert download.content == PDF
    assert download["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Type"] == "application/octet-stream"
    for bad in ("3", "0", "2.1", "1.2.3", "x", "9" * 30):
        assert reader.get(f"/mail/message/{message.pk}/part/{bad}/").status_code == 404


def test_inline_cid_image_is_served_from_the_message(reader: Client, deliver) -> None:
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
                           "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@far.example", "b@here.example", "Pic"
    message.set_content("text")
    message.add_alternative('<p>Logo: <img src="cid:logo@far.example"></p>', subtype="html")
    message.get_payload()[1].add_related(png, "image", "png", cid="<logo@far.example>")
    stored = deliver(data=bytes(message))
    body = reader.get(f"/mail/message/{stored.pk}/body/").content.decode()
    assert f"http://testserver/mail/message/{stored.pk}/inline/2.2/" in body
    image = reader.get(f"/mail/message/{stored.pk}/inline/2.2/")
    assert image.content == png and image["Content-Type"] == "image/png"
    assert image["X-Content-Type-Options"] == "nosniff"
    # Only images are served inline; the HTML part itself is not.
    assert reader.get(f"/mail/message/{stored.pk}/inline/2.1/").status_code == 404


def test_view_source_is_plain_text(reader: Client, deliver) -> None:
    data = build(subject="Source", html="<script>alert(1)</script>")
    message = deliver(data=data)
    source = reader.get(f"/mail/message/{message.pk}/source/")
    assert source.content == data
    assert source["Content-Type"] == "text/plain; charset=utf-8"
    assert source["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in source["Content-Security-Policy"]


def test_our_authentication_results_and_spam_verdict_as_badges(reader: Client, deliver,
                                                               settings) -> None:
    settings.MAILHOST_HOSTNAME = "mx.here.example"
    header = (b"Authentication-Results: mx.here.example; spf=pass smtp.mailfrom=far.example;\r\n"
              b"\tdkim=fail header.d=far.example; dmarc=none header.from=far.example\r\n"
              b"Authentication-Results: forger.example; spf=pass; dkim=pass; dmarc=pass\r\n"
              b"X-Spam-Status: Yes, score=7.5 required=5.0 tests=BAYES_99\r\n")
    message = deliver(data=header + build(subject="Checked"))
    page = reader.get(f"/mail/message/{message.pk}/").content.decode()
    assert '<span class="badge ok">SPF pass</span>' in page
    assert '<span class="badge bad">DKIM fail</span>' in page
    assert '<span class="badge warn">DMARC none</span>' in page
    assert '<span class="badge bad">Spam (7.5)</span>' in page
    assert page.count("SPF ") == 1  # the forged field is not believed


def test_conversation_groups_the_thread_across_folders(reader: Client, deliver,
                                                       mailbox) -> None:
    root = deliver(subject="Trip", Message_ID="<a@far.example>")
    deliver(subject="Re: Trip", sender="bob@here.example", folder="Sent",
            Message_ID="<b@here.example>", In_Reply_To="<a@far.example>",
            References="<a@far.example>")
    deliver(subject="Re: Trip", Message_ID="<c@far.example>", In_Reply_To="<b@here.example>",
            References="<a@far.example> <b@here.example>")
    deliver(subject="Unrelated", Message_ID="<z@far.example>")
    page = reader.get(f"/mail/message/{root.pk}/").content.decode()
    assert f'hx-get="/mail/message/{root.pk}/conversation/"' in page
    page = reader.get(f"/mail/message/{root.pk}/conversation/").content.decode()
    assert "Conversation (3)" in page
    assert "Conversation (3)" in reader.get(f"/mail/message/{root.pk}/?conversation=1"
                                            ).content.decode()
    assert "Unrelated" not in page[page.index("Conversation"):]
    assert "Sent" in page[page.index("Conversation"):]


@pytest.mark.parametrize("name", sorted(p.name for p in MAIL.iterdir() if p.suffix != ".md"))
def test_tricky_messages_read_without_error(reader: Client, deliver, name: str) -> None:
    data = (MAIL / name).read_bytes()
    message = deliver(data=data)
    page = reader.get(f"/mail/message/{message.pk}/")
    assert page.status_code == 200
    assert reader.get("/mail/").status_code == 200
    body = reader.get(f"/mail/message/{message.pk}/body/")
    if body.status_code == 200:
        shown = body.content.decode().split("<body>", 1)[1]
        assert not re.search(r"<script|\son[a-z]+\s*=|javascript:", shown, re.IGNORECASE)
    else:
        assert body.status_code == 404  # no HTML body
    for section in page.context["attachments"]:
        assert reader.get(f"/mail/message/{message.pk}/part/{section.section}/").status_code \
            == 200


# --- acting ----------------------------------------------------------------------


def act(client: Client, action: str, *messages: Message, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/mail/act/", {"action": action, "ids": [m.pk for m in messages],
                                      **extra})


def test_flags_change_as_imap_sees_them(reader: Client, deliver) -> None:
    one, two = deliver(), deliver()
    act(reader, "read", one, two)
    act(reader, "flag", two)
    flags = dict(Message.objects.values_list("pk", "flags"))
    assert flags[one.pk] == Flag.SEEN and flags[two.pk] == Flag.SEEN | Flag.FLAGGED
    act(reader, "unread", one)
    act(reader, "unflag", two)
    flags = dict(Message.objects.values_list("pk", "flags"))
    assert flags[one.pk] == 0 and flags[two.pk] == Flag.SEEN


def test_archive_junk_not_junk_and_move(reader: Client, deliver, mailbox) -> None:
    one, two, three = deliver(), deliver(), deliver()
    response = act(reader, "archive", one)
    assert response.status_code == 302
    assert len(uids(mailbox, "Archive")) == 1
    act(reader, "junk", two)
    assert len(uids(mailbox, "Junk")) == 1 and len(uids(mailbox, "INBOX")) == 1
    junked = Message.objects.get(folder=folder_named(mailbox, "Junk"))
    act(reader, "notjunk", junked)
    assert len(uids(mailbox, "INBOX")) == 2
    project = store.create_folder(mailbox, "Projects")
    act(reader, "move", three, target=str(project.pk))
    assert len(uids(mailbox, "Projects")) == 1
    assert act(reader, "move", deliver(), target="").status_code == 302  # said, not a 500


def test_delete_goes_to_trash_then_for_good_and_trash_empties(reader: Client, deliver,
                                                               mailbox) -> None:
    one, two = deliver(), deliver()
    act(reader, "delete", one, two)
    assert uids(mailbox, "INBOX") == [] and len(uids(mailbox, "Trash")) == 2
    trashed = list(Message.objects.filter(folder=folder_named(mailbox, "Trash")))
    act(reader, "delete", trashed[0])
    assert len(uids(mailbox, "Trash")) == 1
    trash = folder_named(mailbox, "Trash")
    page = reader.get(f"/mail/folder/{trash.pk}/").content.decode()
    assert "Empty Trash" in page
    reader.post(f"/mail/folder/{trash.pk}/empty/")
    assert uids(mailbox, "Trash") == []
    inbox = folder_named(mailbox, "INBOX")
    assert reader.post(f"/mail/folder/{inbox.pk}/empty/").status_code == 404


def test_undo_brings_the_last_move_back(reader: Client, deliver, mailbox) -> None:
    one, two = deliver(subject="Keep me"), deliver(subject="Me too")
    act(reader, "delete", one, two)
    page = reader.get("/mail/").content.decode()
    assert "Undo" in page
    response = reader.post("/mail/undo/")
    assert response.status_code == 302
    assert len(uids(mailbox, "INBOX")) == 2 and uids(mailbox, "Trash") == []
    assert reader.post("/mail/undo/", follow=True).status_code == 200  # nothing left: said


def test_nothing_selected_or_unknown_action_is_told(reader: Client, deliver) -> None:
    message = deliver()
    response = act(reader, "explode", message)
    assert response.status_code == 302
    followed = reader.post("/mail/act/", {"action": "read"}, follow=True)
    assert b"Select one or more messages first." in followed.content


# --- folders ---------------------------------------------------------------------


def test_create_rename_delete_folders(reader: Client, mailbox) -> None:
    assert reader.post("/mail/folders/", {"operation": "create", "name": "Projects"}
                       ).status_code == 302
    projects = folder_named(mailbox, "Projects")
    reader.post("/mail/folders/", {"operation": "create", "name": "Alpha",
                                   "parent": str(projects.pk)})
    assert Folder.objects.filter(mailbox=mailbox, name="Projects/Alpha").exists()
    reader.post("/mail/folders/", {"operation": "rename", "folder": str(projects.pk),
                                   "name": "Work"})
    assert Folder.objects.filter(mailbox=mailbox, name="Work/Alpha").exists()
    page = reader.get("/mail/").content.decode()
    assert page.index(">Trash<") < page.index(">Work<") < page.index(">Alpha<")
    reader.post("/mail/folders/", {"operation": "delete", "folder": str(projects.pk)})
    assert not Folder.objects.filter(mailbox=mailbox, name="Work").exists()


@pytest.mark.parametrize("data", [
    {"operation": "create", "name": ""},
    {"operation": "create", "name": "a//b"},
    {"operation": "create", "name": ".."},
    {"operation": "create", "name": "Trash"},
    {"operation": "rename", "folder": "", "name": "x"},
    {"operation": "delete", "folder": "INBOX"},
    {"operation": "teleport"},
])
def test_bad_folder_changes_are_field_errors(reader: Client, mailbox, data: dict) -> None:
    response = reader.post("/mail/folders/", data)
    assert response.status_code == 400
    assert b'class="form-error" role="alert"' in response.content


def test_special_folders_cannot_be_deleted(reader: Client, mailbox) -> None:
    trash = folder_named(mailbox, "Trash")
    response = reader.post("/mail/folders/", {"operation": "delete", "folder": str(trash.pk)})
    assert response.status_code == 400
    assert Folder.objects.filter(pk=trash.pk).exists()


# --- search ----------------------------------------------------------------------


def test_search_by_words_and_prefixes(reader: Client, deliver, mailbox) -> None:
    deliver(subject="Budget 2025", body="numbers inside", sender="Ann <ann@far.example>")
    deliver(data=with_attachment("Quarterly"))
    deliver(subject="Lunch", body="pizza?", sender="Carl <carl@near.example>", folder="Archive")
    page = reader.get("/mail/search/", {"q": "from:carl"}).content.decode()
    assert "Lunch" in page and "Budget" not in page and "1 result in all folders" in page
    page = reader.get("/mail/search/", {"q": "has:attachment"}).content.decode()
    assert "Quarterly" in page and "Budget" not in page
    page = reader.get("/mail/search/", {"q": "numbers"}).content.decode()
    assert "Budget 2025" in page and "Lunch" not in page
    inbox = folder_named(mailbox, "INBOX")
    page = reader.get("/mail/search/", {"q": "pizza", "in": str(inbox.pk)}).content.decode()
    assert "Nothing found." in page
    bad = reader.get("/mail/search/", {"q": "after:soon"})
    assert bad.status_code == 400 and b"wants a date" in bad.content


# --- who may see what ----------------------------------------------------------------


def other_mailbox_urls(deliver: Callable[..., Message]) -> tuple[list[str], list[tuple]]:
    stranger = make_mailbox("eve@elsewhere.example")
    theirs = deliver(data=with_attachment(), to=stranger)
    folder = folder_named(stranger, "Trash")
    gets = [f"/mail/folder/{folder.pk}/", f"/mail/message/{theirs.pk}/",
            f"/mail/message/{theirs.pk}/body/", f"/mail/message/{theirs.pk}/part/2/",
            f"/mail/message/{theirs.pk}/inline/2/", f"/mail/message/{theirs.pk}/source/",
            f"/mail/message/{theirs.pk}/conversation/",
            f"/mail/search/?q=x&in={folder.pk}"]
    posts = [(f"/mail/folder/{folder.pk}/empty/", {}),
             ("/mail/folders/", {"operation": "delete", "folder": str(folder.pk)}),
             ("/mail/act/", {"action": "move", "ids": [theirs.pk],
                             "target": str(folder.pk)})]
    return gets, posts


def test_another_mailbox_is_never_reached(reader: Client, deliver, mailbox) -> None:
    gets, posts = other_mailbox_urls(deliver)
    for url in gets:
        assert reader.get(url).status_code == 404, url
    for url, data in posts:
        assert reader.post(url, data).status_code in (302, 400, 404), url
    # Their message was not touched by anything above.
    stranger = Folder.objects.exclude(mailbox=mailbox).filter(name="INBOX").get()
    assert stranger.message_count == 1
    assert Folder.objects.filter(pk=folder_named(stranger.mailbox, "Trash").pk).exists()
    # Selected with one of ours, theirs is left out.
    mine = deliver()
    theirs = Message.objects.get(folder=stranger)
    act(reader, "delete", mine, theirs)
    assert Message.objects.filter(pk=theirs.pk, folder=stranger).exists()


def test_anonymous_and_admins_are_kept_out(client: Client, deliver, db) -> None:
    message = deliver()
    urls = ["/mail/", f"/mail/message/{message.pk}/", f"/mail/message/{message.pk}/source/",
            "/mail/search/?q=x", "/mail/folders/", "/mail/sidebar/"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/signin/")
    assert client.get("/mail/events/").status_code == 404
    from apps.directory.models import User

    admin = User.objects.create_superuser("root@admin.example", "pw 123456789")
    client.force_login(admin)
    for url in urls:
        assert client.get(url).status_code == 404, url


def test_changes_need_the_csrf_token(mailbox, deliver) -> None:
    message = deliver()
    client = Client(enforce_csrf_checks=True)
    client.force_login(mailbox.user)
    inbox = folder_named(mailbox, "INBOX")
    for url, data in [("/mail/act/", {"action": "delete", "ids": [message.pk]}),
                      ("/mail/undo/", {}), (f"/mail/folder/{inbox.pk}/empty/", {}),
                      ("/mail/folders/", {"operation": "create", "name": "X"})]:
        assert client.post(url, data).status_code == 403, url
    assert uids(mailbox, "INBOX") == [message.uid]


def test_no_open_redirect_after_an_action(reader: Client, deliver, mailbox) -> None:
    message = deliver()
    response = act(reader, "read", message, next="https://evil.example/")
    inbox = folder_named(mailbox, "INBOX")
    assert response["Location"] == f"/mail/folder/{inbox.pk}/"
    response = act(reader, "unread", message, next="//evil.example/")
    assert response["Location"] == f"/mail/folder/{inbox.pk}/"
    assert act(reader, "read", message, next="/mail/?page=2")["Location"] == "/mail/?page=2"


def test_trash_deleted_over_imap_is_made_again(reader: Client, deliver, mailbox) -> None:
    store.delete_folder(mailbox, "Trash")
    message = deliver()
    act(reader, "delete", message)
    trash = Folder.objects.get(mailbox=mailbox, special_use="\\Trash")
    assert trash.name == "Trash" and trash.message_count == 1


def test_any_page_of_the_layout_lists_the_folders(rf, mailbox) -> None:
    """The writing side's pages extend the same layout without passing folders."""
    from django.template.loader import render_to_string

    request = rf.get("/mail/compose/")
    request.user = mailbox.user
    html = render_to_string("webmail/base.html", {}, request=request)
    assert 'class="folder-list"' in html and ">Inbox<" in html and ">Trash<" in html
