"""The settings page: each section changes what the rest of the platform does
(the password every protocol checks, forwarding, vacation, Junk filing)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.delivery import rules
from apps.delivery.models import Vacation
from apps.directory import services as directory
from apps.directory.models import Mailbox
from apps.sieve import services as sieve
from tests.factories import PASSWORD, make_mailbox
from tests.webmail.writing_helpers import signed_in

NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def alice(db) -> Mailbox:
    return make_mailbox("alice@example.org")


def save(client: Client, section: str, **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/mail/settings/", {
        "section": section, **{f"{section}-{name}": value for name, value in fields.items()}})


def test_page_shows_every_section_with_labels(client, alice):
    page = signed_in(client, alice).get("/mail/settings/").content.decode()
    for label in ("Display name", "Signature", "Current password", "New password",
                  "Forward my mail to", "Send an automatic reply", "Text of the reply",
                  "First day", "Last day", "Spam threshold"):
        assert re.search(rf"<label[^>]*>\s*(<input[^>]*>)?\s*{label}</label>", page), label
    assert page.count('name="csrfmiddlewaretoken"') == 6 + 1  # six sections and sign-out


def test_password_change_needs_the_old_one_and_counts_towards_lockout(client, alice, settings):
    settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = 3
    signed_in(client, alice)
    response = save(client, "password", old_password="wrong", new_password=NEW_PASSWORD,
                    repeat_password=NEW_PASSWORD)
    assert response.status_code == 400
    assert "The current password is not right" in response.content.decode()
    response = save(client, "password", old_password=PASSWORD, new_password=NEW_PASSWORD,
                    repeat_password="something else")
    assert "The two new passwords differ." in response.content.decode()
    response = save(client, "password", old_password=PASSWORD, new_password="short",
                    repeat_password="short")
    assert response.status_code == 400 and "too short" in response.content.decode()
    response = save(client, "password", old_password=PASSWORD, new_password=NEW_PASSWORD,
                    repeat_password=NEW_PASSWORD)
    assert response.status_code == 302
    assert client.get("/mail/settings/").status_code == 200, "this session stays signed in"
    assert directory.authenticate(alice.address, NEW_PASSWORD) is not None
    assert directory.authenticate(alice.address, PASSWORD) is None
    # Two more wrong old passwords reach the lockout: even the right one fails now.
    for _ in range(2):
        save(client, "password", old_password="wrong", new_password=PASSWORD,
             repeat_password=PASSWORD)
    response = save(client, "password", old_password=NEW_PASSWORD, new_password=PASSWORD,
                    repeat_password=PASSWORD)
    assert response.status_code == 400
    assert directory.authenticate(alice.address, NEW_PASSWORD) is None


def test_display_name_and_signature(client, alice):
    response = save(signed_in(client, alice), "profile", display_name=" Alice L. ",
                    signature="-- cheers")
    assert response.status_code == 302
    alice.user.refresh_from_db()
    assert alice.user.display_name == "Alice L."
    assert "-- cheers" in client.get("/mail/compose/").content.decode()
    response = save(client, "profile", display_name="x" * 300, signature="")
    assert response.status_code == 400


def test_identities_list_the_aliases_and_need_one(client, alice):
    directory.create_alias("sales@example.org", ["alice@example.org"])
    directory.create_alias("other@example.org", ["someone@remote.example"])
    page = signed_in(client, alice).get("/mail/settings/").content.decode()
    assert "sales@example.org" in page and "other@example.org" not in page
    response = save(client, "identities", name_0="Alice")
    assert response.status_code == 400
    assert "Keep at least one address" in response.content.decode()
    save(client, "identities", use_1="on", name_1="Sales")
    page = client.get("/mail/compose/").content.decode()
    assert "Sales &lt;sales@example.org&gt;" in page
    assert '<option value="alice@example.org"' not in page


def test_forwarding_is_a_sieve_redirect(client, alice):
    response = save(signed_in(client, alice), "forwarding",
                    forward_to="Bob <bob@remote.example>, carol@remote.example")
    assert response.status_code == 302
    script = sieve.get_script(alice, rules.GENERATED_NAME)
    assert script.active
    assert ('redirect "bob@remote.example";\r\nredirect "carol@remote.example";\r\nstop;'
            in script.content)
    alice.refresh_from_db()
    assert alice.forward_to == []  # not the directory's: one forward, not two
    response = save(client, "forwarding", forward_to="alice@example.org",
                    forward_keep_copy="on")
    assert response.status_code == 400
    assert "cannot forward to itself" in response.content.decode()
    save(client, "forwarding", forward_to="bob@remote.example", forward_keep_copy="on")
    assert 'redirect :copy "bob@remote.example";' in sieve.get_script(
        alice, rules.GENERATED_NAME).content
    # Off: the script had nothing else in it, and goes.
    save(client, "forwarding", forward_to="", forward_keep_copy="on")
    assert sieve.list_scripts(alice) == []
    page = client.get("/mail/settings/").content.decode()
    assert "No filters." in page and 'id="not-in-effect"' not in page


def test_the_directorys_forwarding_moves_into_the_script(client, alice):
    directory.update_mailbox(alice, forward_to=["old@remote.example"], forward_keep_copy=True)
    page = signed_in(client, alice).get("/mail/settings/").content.decode()
    assert 'id="directory-forwarding"' in page and 'value="old@remote.example"' in page
    save(client, "forwarding", forward_to="old@remote.example", forward_keep_copy="on")
    alice.refresh_from_db()
    assert alice.forward_to == []
    assert 'redirect :copy "old@remote.example";' in sieve.get_script(
        alice, rules.GENERATED_NAME).content
    assert 'id="directory-forwarding"' not in client.get("/mail/settings/").content.decode()


def test_a_hand_written_script_keeps_its_rules_and_the_page_says_so(client, alice):
    own = 'require "fileinto";\r\nif header :contains "subject" "[dev]" { fileinto "Dev"; }\r\n'
    sieve.put_script(alice, "mine", own)
    sieve.set_active(alice, "mine")
    save(signed_in(client, alice), "vacation", enabled="on", subject="", body="Away.")
    content = sieve.get_script(alice, "mine").content
    assert content.startswith('require "fileinto";\r\n# BEGIN Mailhost settings')
    assert 'vacation "Away.";' in content and content.endswith(own.split("\r\n", 1)[1])
    assert [s.name for s in sieve.list_scripts(alice)] == ["mine"]  # no second script
    page = client.get("/mail/settings/").content.decode()
    assert 'id="hand-written"' in page and "“mine” holds rules you wrote" in page
    assert 'id="not-in-effect"' not in page and "fileinto &quot;Dev&quot;" in page
    # Uploaded again without the section (a ManageSieve client): the page says
    # the auto-reply is off until saved again, and saving adds it back.
    sieve.put_script(alice, "mine", own)
    assert 'id="not-in-effect"' in client.get("/mail/settings/").content.decode()
    save(client, "vacation", enabled="on", subject="", body="Away.")
    assert 'vacation "Away.";' in sieve.get_script(alice, "mine").content
    # Off: the section goes, the user's rules stay as written.
    save(client, "vacation", subject="", body="Away.")
    assert sieve.get_script(alice, "mine").content == own
    # A script whose first rule shares its line with a require cannot take
    # the section: the page says why, and nothing changes.
    sieve.put_script(alice, "mine", 'require "fileinto"; fileinto "Dev";')
    response = save(client, "vacation", enabled="on", subject="", body="Away.")
    assert response.status_code == 400
    assert "your script “mine” cannot take these settings" in response.content.decode()
    assert not Vacation.objects.get(mailbox=alice).enabled
    assert sieve.get_script(alice, "mine").content == 'require "fileinto"; fileinto "Dev";'


def test_vacation_settings(client, alice):
    response = save(signed_in(client, alice), "vacation", enabled="on", subject="Away",
                    body="Back on Monday.", start="2026-12-01", end="2026-11-20")
    assert response.status_code == 400
    assert "the last day comes before the first" in response.content.decode()
    response = save(client, "vacation", enabled="on", subject="", body="")
    assert "write the text of the reply" in response.content.decode()
    save(client, "vacation", enabled="on", subject="Away", body="Back on Monday.",
         start="2026-12-01", end="2026-12-24")
    vacation = Vacation.objects.get(mailbox=alice)
    assert vacation.enabled and vacation.body == "Back on Monday."
    assert str(vacation.end) == "2026-12-24"
    page = client.get("/mail/settings/").content.decode()
    assert "Back on Monday." in page and 'value="2026-12-01"' in page
    # Written as Sieve (RFC 5230), between the first and the last day (RFC 5260).
    script = sieve.get_script(alice, rules.GENERATED_NAME).content
    assert 'vacation :subject "Away" "Back on Monday.";' in script
    assert 'currentdate :value "le" "date" "2026-12-24"' in script


def test_spam_threshold(client, alice):
    save(signed_in(client, alice), "spam", spam_threshold="4.5")
    alice.refresh_from_db()
    assert alice.spam_threshold == 4.5
    response = save(client, "spam", spam_threshold="1001")
    assert response.status_code == 400 and "at most 1000" in response.content.decode()
    save(client, "spam", spam_threshold="")
    alice.refresh_from_db()
    assert alice.spam_threshold is None


def test_unknown_section_changes_nothing(client, alice):
    response = signed_in(client, alice).post("/mail/settings/", {
        "section": "quota", "quota-quota": "0"})
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.quota != 0
