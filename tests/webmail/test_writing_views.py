"""Compose, reply, forward, drafts and send through the webmail's views: what
the page shows, what lands in the mailboxes, what is refused and kept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.delivery.models import QueueEntry
from apps.directory import services as directory
from apps.store.models import Flag, Message
from apps.webmail.writing import attachments_of
from tests.factories import make_mailbox
from tests.smtp.helpers import stored
from tests.webmail.writing_helpers import deliver, folder, parsed, signed_in, text_of

ORIGINAL = (
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.org, dave@example.org\r\n"
    b"Cc: erin@remote.example\r\nSubject: Plans\r\nMessage-ID: <plans-1@remote.example>\r\n"
    b"References: <start@remote.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nShall we meet?\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
    b"filename=agenda.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECA/8=\r\n--b--\r\n")


@pytest.fixture
def alice(db):
    return make_mailbox("alice@example.org")


@pytest.fixture
def bob(db):
    return make_mailbox("bob@example.org")


def compose(client: Client, **fields):  # type: ignore[no-untyped-def]
    data = {"from_address": "alice@example.org", "to": "", "cc": "", "bcc": "",
            "subject": "", "body": "", "action": "send", **fields}
    return client.post("/mail/compose/", data)


def test_compose_page_has_labelled_fields_and_the_signature(client, alice):
    directory.update_account(alice.user, display_name="Alice Liddell")
    signed_in(client, alice).post("/mail/settings/", {
        "section": "profile", "profile-display_name": "Alice Liddell",
        "profile-signature": "Alice\nWonderland Ltd"})
    page = client.get("/mail/compose/").content.decode()
    for label in ("From", "To", "Cc", "Bcc", "Subject", "Message", "Attach files"):
        assert f">{label}</label>" in page
    assert "Alice Liddell &lt;alice@example.org&gt;" in page
    assert "-- \nAlice\nWonderland Ltd" in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_send_delivers_signs_and_keeps_a_sent_copy(client, alice, bob):
    response = compose(signed_in(client, alice), to="Bob <bob@example.org>",
                       bcc="carol@remote.example", subject="Grüße", body="Hello Bob\n" * 3)
    assert response.status_code == 302 and response["Location"] == "/mail/"
    (received,) = folder("bob@example.org", "INBOX")
    assert received["Subject"] == "Grüße" and received["To"] == "Bob <bob@example.org>"
    assert received["Bcc"] is None, "Bcc never reaches the recipients"
    assert received["DKIM-Signature"] is not None
    assert text_of(received) == "Hello Bob\n" * 3
    (copy,) = folder("alice@example.org", "Sent")
    assert copy["Message-ID"] == received["Message-ID"] and copy["Bcc"] == "carol@remote.example"
    assert Message.objects.get(folder__name="Sent").flags & Flag.SEEN
    (entry,) = QueueEntry.objects.all()
    assert entry.recipient == "carol@remote.example" and entry.message.sender == alice.address
    assert "Message sent." in client.get("/mail/").content.decode()


def test_rich_text_goes_as_alternative_with_its_html_cleaned(client, alice, bob):
    compose(signed_in(client, alice), to="bob@example.org", subject="rich",
            html_body='<p>Hi <b>Bob</b> <a href="https://x.example/">link</a></p>'
                      '<script>alert(1)</script><img src="https://track.example/p.gif">'
                      '<a href="javascript:alert(2)">bad</a><ul><li>one</li></ul>')
    (raw,) = stored("bob@example.org")
    message = parsed(raw)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hi Bob link <https://x.example/>" in text and "- one" in text
    assert "<b>Bob</b>" in html and "<li>one</li>" in html
    for hostile in ("script", "alert", "track.example", "javascript"):
        assert hostile not in html
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_long_lines_and_non_ascii_are_encoded_seven_bit_safe(client, alice, bob):
    compose(signed_in(client, alice), to="bob@example.org", subject="Ünïcödé " * 20,
            body="ä" * 3000)
    (raw,) = stored("bob@example.org")
    assert raw.isascii() and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    message = parsed(raw)
    assert message["Subject"] == ("Ünïcödé " * 20).strip()
    assert text_of(message) == "ä" * 3000 + "\n"
    compose(client, to="bob@example.org", subject="kurz", body="Grüße aus Köln")
    raw = stored("bob@example.org")[1]
    assert raw.isascii() and b"Content-Transfer-Encoding: quoted-printable" in raw
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln" in raw


def test_reply_prefills_thread_headers_quote_and_subject(client, alice, bob):
    original = deliver(alice, ORIGINAL)
    page = signed_in(client, alice).get(f"/mail/compose/?reply={original.pk}").content.decode()
    assert 'value="Re: Plans"' in page and 'value="Carol &lt;carol@remote.example&gt;"' in page
    assert 'value="&lt;plans-1@remote.example&gt;"' in page
    assert "&gt; Shall we meet?" in page
    assert f'name="replied" value="{original.pk}"' in page
    compose(client, to="bob@example.org", subject="Re: Plans", body="Yes",
            in_reply_to="<plans-1@remote.example>", replied=original.pk,
            references="<start@remote.example> <plans-1@remote.example>")
    (received,) = folder("bob@example.org", "INBOX")
    assert received["In-Reply-To"] == "<plans-1@remote.example>"
    assert received["References"] == "<start@remote.example> <plans-1@remote.example>"
    original.refresh_from_db()
    assert original.flags & Flag.ANSWERED, "an IMAP client sees it answered"


def test_reply_all_leaves_out_the_user(client, alice):
    original = deliver(alice, ORIGINAL)
    page = signed_in(client, alice).get(
        f"/mail/compose/?reply_all={original.pk}").content.decode()
    assert "Carol &lt;carol@remote.example&gt;, dave@example.org" in page
    assert 'name="cc" value="erin@remote.example"' in page
    assert "alice@example.org, " not in page


def test_forward_keeps_the_attachments(client, alice, bob):
    original = deliver(alice, ORIGINAL)
    page = signed_in(client, alice).get(f"/mail/compose/?forward={original.pk}").content.decode()
    assert 'value="Fwd: Plans"' in page and "agenda.bin" in page
    compose(client, to="bob@example.org", subject="Fwd: Plans", body="see below",
            attachments_from=original.pk, keep=["0"], forwarded=original.pk)
    original.refresh_from_db()
    assert original.keywords == ["$Forwarded"]
    (received,) = folder("bob@example.org", "INBOX")
    (attachment,) = received.iter_attachments()
    assert attachment.get_filename() == "agenda.bin"
    assert attachment.get_content() == b"\x00\x01\x02\x03\xff"


def test_uploaded_attachment_arrives_byte_for_byte(client, alice, bob):
    payload = bytes(range(256)) * 40
    compose(signed_in(client, alice), to="bob@example.org", subject="file",
            attachments=[SimpleUploadedFile("data.bin", payload, "application/octet-stream"),
                         SimpleUploadedFile("note.txt", "naïve\n".encode(), "text/plain")])
    (received,) = folder("bob@example.org", "INBOX")
    files = {part.get_filename(): part.get_payload(decode=True)
             for part in received.iter_attachments()}
    assert files == {"data.bin": payload, "note.txt": "naïve\n".encode()}


def test_attachments_over_the_submission_limit_are_a_field_error(client, alice, bob, settings):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE = 10_000
    response = compose(signed_in(client, alice), to="bob@example.org",
                       attachments=[SimpleUploadedFile("big.bin", b"x" * 20_000)])
    assert response.status_code == 400
    assert "at most 9.8\xa0KB can be sent" in response.content.decode()
    assert stored("bob@example.org") == []


def test_bad_addresses_are_field_errors(client, alice):
    response = compose(signed_in(client, alice), to="bob@example.org, not an address")
    assert response.status_code == 400
    assert "is not an email address" in response.content.decode()
    response = compose(client, to="")
    assert "Write at least one recipient." in response.content.decode()


def test_a_refused_recipient_shows_the_error_and_keeps_the_draft(client, alice, bob):
    response = compose(signed_in(client, alice), to="bob@example.org, nobody@example.org",
                       subject="Party", body="Come!")
    assert response.status_code == 302 and "?draft=" in response["Location"]
    page = client.get(response["Location"]).content.decode()
    assert "Not sent: No such user here: &lt;nobody@example.org&gt;" in page
    assert 'value="Party"' in page and "Come!" in page
    assert stored("bob@example.org") == []
    (draft,) = folder("alice@example.org", "Drafts")
    assert draft["Subject"] == "Party"
    assert folder("alice@example.org", "Sent") == []


def test_the_hourly_limit_is_shared_with_smtp_and_keeps_the_draft(client, alice, bob, settings):
    settings.MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = 1
    compose(signed_in(client, alice), to="bob@example.org", subject="one")
    response = compose(client, to="bob@example.org", subject="two")
    page = client.get(response["Location"]).content.decode()
    assert "Sending limit of 1 messages per hour reached" in page
    assert [m["Subject"] for m in folder("bob@example.org", "INBOX")] == ["one"]
    assert [m["Subject"] for m in folder("alice@example.org", "Drafts")] == ["two"]


def test_from_is_limited_to_the_users_identities(client, alice, bob):
    directory.create_alias("sales@example.org", ["alice@example.org"])
    page = signed_in(client, alice).get("/mail/compose/").content.decode()
    assert '<option value="alice@example.org"' in page
    response = compose(client, from_address="bob@example.org", to="bob@example.org")
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    signed_in(client, alice).post("/mail/settings/", {
        "section": "identities", "identities-use_0": "on", "identities-name_0": "Alice",
        "identities-use_1": "on", "identities-name_1": "Sales team"})
    compose(client, from_address="sales@example.org", to="bob@example.org", subject="offer")
    (received,) = folder("bob@example.org", "INBOX")
    assert received["From"] == "Sales team <sales@example.org>"


def test_saving_a_draft_replaces_the_previous_one_and_sending_removes_it(client, alice, bob):
    signed_in(client, alice)
    first = client.post("/mail/compose/autosave/", {
        "from_address": "alice@example.org", "to": "bob@example.org", "subject": "v1",
        "body": "draft one"}).json()["draft"]
    second = client.post("/mail/compose/autosave/", {
        "from_address": "alice@example.org", "to": "bob@example.org", "subject": "v2",
        "body": "draft two", "draft": first}).json()["draft"]
    (draft,) = Message.objects.filter(folder__name="Drafts")
    assert draft.pk == second and draft.flags & Flag.DRAFT
    assert [m["Subject"] for m in folder("alice@example.org", "Drafts")] == ["v2"]
    page = client.get(f"/mail/compose/?draft={second}").content.decode()
    assert 'value="v2"' in page and "draft two" in page
    compose(client, to="bob@example.org", subject="v3", draft=second)
    assert folder("alice@example.org", "Drafts") == []
    assert [m["Subject"] for m in folder("bob@example.org", "INBOX")] == ["v3"]


def test_draft_keeps_uploaded_attachments_across_saves(client, alice, bob):
    signed_in(client, alice)
    response = compose(client, to="bob@example.org", subject="with file", action="save",
                       attachments=[SimpleUploadedFile("a.bin", b"\x00abc\xff")])
    draft = int(response["Location"].rpartition("=")[2])
    page = client.get(response["Location"]).content.decode()
    assert "a.bin" in page
    compose(client, to="bob@example.org", subject="with file", draft=draft,
            attachments_from=draft, keep=["0"])
    (received,) = folder("bob@example.org", "INBOX")
    assert [p.get_payload(decode=True) for p in received.iter_attachments()] == [b"\x00abc\xff"]


def test_another_users_messages_are_not_found(client, alice, bob):
    theirs = deliver(bob, ORIGINAL)
    signed_in(client, alice)
    for query in ("reply", "reply_all", "forward", "draft"):
        assert client.get(f"/mail/compose/?{query}={theirs.pk}").status_code == 404
    assert client.get("/mail/compose/?reply=junk").status_code == 404
    response = compose(client, to="bob@example.org", attachments_from=theirs.pk, keep=["0"])
    assert response.status_code == 404
    response = compose(client, to="bob@example.org", draft=theirs.pk)
    assert response.status_code == 404
    assert len(stored("bob@example.org")) == 1
    for field in ("draft", "attachments_from"):
        response = client.post("/mail/compose/autosave/", {
            "from_address": "alice@example.org", "to": "bob@example.org", field: theirs.pk})
        assert response.status_code == 404
    assert Message.objects.filter(pk=theirs.pk).exists()
    compose(client, to="bob@example.org", replied=theirs.pk, forwarded=theirs.pk)
    theirs.refresh_from_db()
    assert (theirs.flags, theirs.keywords) == (0, []), "another's message is never marked"


def test_anonymous_and_administrators_are_kept_out(client, db):
    assert client.get("/mail/compose/")["Location"].startswith("/signin/")
    assert client.get("/mail/settings/")["Location"].startswith("/signin/")
    admin = directory.User.objects.create_superuser("root@admin.example", "admin password 1")
    client.force_login(admin)
    assert client.get("/mail/compose/").status_code == 404


def test_compose_needs_the_csrf_token(alice, bob):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    response = client.post("/mail/compose/", {"from_address": alice.address,
                                              "to": "bob@example.org", "action": "send"})
    assert response.status_code == 403 and stored("bob@example.org") == []


def test_address_suggestions_from_sent_mail_and_the_domain(client, alice, bob,
                                                           django_assert_max_num_queries):
    directory.update_account(bob.user, display_name="Bob Builder")
    make_mailbox("bobby@other.example")
    signed_in(client, alice)
    for index in range(5):
        compose(client, to=f"Roberta {index} <rob{index}@remote.example>", subject="hi")
    with django_assert_max_num_queries(8):
        found = client.get("/mail/compose/addresses/?q=rob").json()["addresses"]
    assert "Roberta 4 <rob4@remote.example>" in found and len(found) == 5
    found = client.get("/mail/compose/addresses/?q=builder").json()["addresses"]
    assert found == ["Bob Builder <bob@example.org>"]
    assert client.get("/mail/compose/addresses/?q=bobby").json()["addresses"] == []


def test_rich_text_shown_again_with_errors_is_cleaned(client, alice):
    response = compose(signed_in(client, alice), to="not an address",
                       html_body='<p>x</p><img src=x onerror="alert(1)"><script>alert(2)</script>')
    assert response.status_code == 400
    (value,) = re.findall(r'name="html_body" value="([^"]*)"', response.content.decode())
    assert value.startswith("&lt;p&gt;x&lt;/p&gt;")
    assert "onerror" not in value and "alert" not in value and "script" not in value


MAIL = Path(__file__).parent / "mail"


@pytest.mark.parametrize("name", sorted(p.name for p in MAIL.glob("*.eml")))
def test_real_mail_can_be_answered_and_forwarded(client, alice, bob, name):
    """Bogus charsets, broken headers, non-ASCII addresses (RFC 6532), a PDF."""
    data = (MAIL / name).read_bytes()
    original = deliver(alice, data)
    signed_in(client, alice)
    for mode in ("reply", "reply_all", "forward"):
        assert client.get(f"/mail/compose/?{mode}={original.pk}").status_code == 200
    kept = attachments_of(parsed(data))
    compose(client, to="bob@example.org", subject="fwd", body="see below",
            attachments_from=original.pk, keep=[str(i) for i in range(len(kept))])
    (received,) = folder("bob@example.org", "INBOX")
    assert [p.get_payload(decode=True) for p in received.iter_attachments()] == [
        a.data for a in kept]
