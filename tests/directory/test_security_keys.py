"""Security keys (WebAuthn) in the service layer, answered by a software
authenticator: a key registers and then signs in; an answer for another
origin or relying party, a challenge answered twice or expired, a counter
that did not grow and another person's key are all refused; the domain
policy counts keys as a second factor."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from apps.directory import app_passwords, second_factor, security_keys
from apps.directory import services as directory
from apps.directory.audit import Actor
from apps.directory.backends import MailhostBackend
from apps.directory.models import AuditEntry, SecurityKey
from apps.web.auth import second_factor_missing
from mailhost.errors import Conflict, Invalid
from tests.factories import PASSWORD, make_domain, make_mailbox
from tests.webauthn_authenticator import SoftwareAuthenticator

pytestmark = pytest.mark.django_db

RP = security_keys.RelyingParty(id="mail.example", origin="https://mail.example")


def enrol(user, authenticator: SoftwareAuthenticator, name: str = "Blue key") -> SecurityKey:  # type: ignore[no-untyped-def]
    session: dict = {}
    options = security_keys.registration_options(user, rp=RP, challenges=session)
    return security_keys.register(user, authenticator.create(options, origin=RP.origin),
                                  name=name, rp=RP, challenges=session,
                                  actor=Actor(user, "192.0.2.1"))


def sign_in_answer(user, authenticator: SoftwareAuthenticator, **kwargs) -> tuple[dict, str]:  # type: ignore[no-untyped-def]
    """A session holding a sign-in challenge, and the authenticator's answer."""
    session: dict = {}
    options = security_keys.authentication_options(user, rp=RP, challenges=session)
    return session, authenticator.get(options, origin=kwargs.pop("origin", RP.origin), **kwargs)


def test_a_registered_key_signs_in_and_its_use_is_recorded():
    user = make_mailbox("kim@keys.example").user
    authenticator = SoftwareAuthenticator()
    key = enrol(user, authenticator)
    assert key.transports == ["usb"] and key.sign_count == 0 and key.last_used is None
    assert AuditEntry.objects.filter(action="security key add", object_type="account",
                                     object_repr="kim@keys.example: Blue key").exists()
    session, answer = sign_in_answer(user, authenticator)
    options = security_keys.authentication_options(user, rp=RP, challenges={})
    assert [c["id"] for c in options["allowCredentials"]] == [key.credential_id]
    assert security_keys.verify(user, answer, rp=RP, challenges=session)
    key.refresh_from_db()
    assert key.sign_count == 1 and key.last_used is not None


def test_an_answer_counts_once():
    user = make_mailbox("lee@keys.example").user
    authenticator = SoftwareAuthenticator()
    enrol(user, authenticator)
    session, answer = sign_in_answer(user, authenticator)
    replay = dict(session)
    assert security_keys.verify(user, answer, rp=RP, challenges=session)
    assert security_keys.CHALLENGE_KEY not in session  # taken out: single use
    # The same answer again, even with the challenge put back, is refused:
    # the counter it carries is no longer ahead of the stored one.
    assert not security_keys.verify(user, answer, rp=RP, challenges=session)
    assert not security_keys.verify(user, answer, rp=RP, challenges=replay)
    # An old answer to a new challenge does not fit it.
    fresh: dict = {}
    security_keys.authentication_options(user, rp=RP, challenges=fresh)
    assert not security_keys.verify(user, answer, rp=RP, challenges=fresh)
    assert security_keys.CHALLENGE_KEY not in fresh  # a wrong answer uses it up too


def test_a_registration_challenge_answers_once():
    user = make_mailbox("max@keys.example").user
    authenticator = SoftwareAuthenticator()
    session: dict = {}
    options = security_keys.registration_options(user, rp=RP, challenges=session)
    answer = authenticator.create(options, origin=RP.origin)
    security_keys.register(user, answer, name="One", rp=RP, challenges=session)
    with pytest.raises(Invalid, match="expired"):
        security_keys.register(user, answer, name="Two", rp=RP, challenges=session)
    assert user.security_keys.count() == 1


def test_another_origin_or_relying_party_is_refused():
    user = make_mailbox("ned@keys.example").user
    authenticator = SoftwareAuthenticator()
    session: dict = {}
    options = security_keys.registration_options(user, rp=RP, challenges=session)
    with pytest.raises(Invalid, match="origin"):
        security_keys.register(user, authenticator.create(options, origin="https://evil.example"),
                               name="Phished", rp=RP, challenges=session)
    assert not user.security_keys.exists()
    enrol(user, authenticator)
    session, answer = sign_in_answer(user, authenticator, origin="https://evil.example")
    assert not security_keys.verify(user, answer, rp=RP, challenges=session)
    # Signed for another relying party: the authenticator data carries its hash.
    session = {}
    options = security_keys.authentication_options(user, rp=RP, challenges=session)
    answer = authenticator.get({**options, "rpId": "evil.example"}, origin=RP.origin)
    assert not security_keys.verify(user, answer, rp=RP, challenges=session)
    session, answer = sign_in_answer(user, authenticator)
    assert security_keys.verify(user, answer, rp=RP, challenges=session)  # the key itself works


def test_a_counter_that_does_not_grow_is_refused():
    """WebAuthn §6.1.1: a signature counter at or below the stored one means
    a cloned authenticator."""
    user = make_mailbox("ora@keys.example").user
    authenticator = SoftwareAuthenticator()
    enrol(user, authenticator)
    session, answer = sign_in_answer(user, authenticator)
    assert security_keys.verify(user, answer, rp=RP, challenges=session)
    session, answer = sign_in_answer(user, authenticator, count=False)
    assert not security_keys.verify(user, answer, rp=RP, challenges=session)


def test_an_expired_challenge_or_another_persons_key_is_refused(monkeypatch):
    alice = make_mailbox("pat@keys.example").user
    bob = make_mailbox("quin@keys.example").user
    alices_key, bobs_key = SoftwareAuthenticator(), SoftwareAuthenticator()
    enrol(alice, alices_key)
    enrol(bob, bobs_key)
    session, answer = sign_in_answer(alice, bobs_key)
    assert not security_keys.verify(alice, answer, rp=RP, challenges=session)
    session, answer = sign_in_answer(alice, alices_key)
    later = time.time() + security_keys.CHALLENGE_SECONDS + 1
    monkeypatch.setattr(security_keys.time, "time", lambda: later)
    assert not security_keys.verify(alice, answer, rp=RP, challenges=session)


def test_bad_answers_are_refused_with_a_reason():
    user = make_mailbox("rae@keys.example").user
    session: dict = {}
    security_keys.registration_options(user, rp=RP, challenges=session)
    with pytest.raises(Invalid, match="did not register"):
        security_keys.register(user, "", name="Empty", rp=RP, challenges=session)
    with pytest.raises(Invalid, match="not accepted"):
        security_keys.register(user, json.dumps({"id": "x"}), name="Junk", rp=RP,
                               challenges=session)
    with pytest.raises(Invalid, match="name"):
        security_keys.register(user, "{}", name="   ", rp=RP, challenges=session)
    session, answer = {}, "not json"
    security_keys.authentication_options(user, rp=RP, challenges=session)
    assert not security_keys.verify(user, answer, rp=RP, challenges=session)


def test_the_same_key_or_name_twice_is_a_conflict():
    user = make_mailbox("sam@keys.example").user
    authenticator = SoftwareAuthenticator()
    enrol(user, authenticator, "Blue key")
    with pytest.raises(Conflict):
        enrol(user, SoftwareAuthenticator(), "Blue key")
    with pytest.raises(Conflict):
        enrol(user, authenticator, "Other name")
    # Registration options exclude the keys one has, so a browser refuses early.
    options = security_keys.registration_options(user, rp=RP, challenges={})
    assert len(options["excludeCredentials"]) == 1


def missing(user) -> bool:  # type: ignore[no-untyped-def]
    """The policy check of a webmail page, on the user as a request loads it."""
    return second_factor_missing(MailhostBackend().get_user(user.pk))


def test_keys_count_as_a_second_factor_for_the_domain_policy():
    domain = make_domain("strict-keys.example")
    mailbox = make_mailbox("tia@strict-keys.example")
    user = mailbox.user
    directory.update_domain(domain, second_factor_required=True)
    assert missing(user) and not second_factor.is_enrolled(user)
    first = enrol(user, SoftwareAuthenticator(), "First")
    assert not missing(user) and second_factor.is_enrolled(user)
    assert app_passwords.required(mailbox)
    with pytest.raises(Conflict, match="requires a second factor"):
        security_keys.remove(first, actor=Actor(user))
    second = enrol(user, SoftwareAuthenticator(), "Second")
    security_keys.remove(first, actor=Actor(user))
    assert AuditEntry.objects.filter(action="security key remove",
                                     object_repr="tia@strict-keys.example: First").exists()
    second_factor.reset(user)
    assert not SecurityKey.objects.filter(pk=second.pk).exists()
    assert missing(user)


def test_the_password_alone_no_longer_signs_in_to_the_web():
    user = make_mailbox("uma@keys.example").user
    enrol(user, SoftwareAuthenticator())
    client = Client()
    response = client.post("/signin/", {"email": "uma@keys.example", "password": PASSWORD})
    assert response["Location"] == "/signin/code/"
    assert client.get("/mail/").status_code == 302  # not signed in yet
    page = client.get("/signin/code/").content.decode()
    assert "Use your security key" in page and 'id="webauthn-options"' in page
    assert 'name="code"' not in page  # no authenticator app: no code field
    refused = client.post("/signin/code/", {"action": "key", "credential": "{}"})
    assert refused.status_code == 400 and "That key was not accepted" in refused.content.decode()


def test_the_relying_party_is_the_pages_host_unless_set(settings):
    assert security_keys.relying_party(scheme="https", host="mail.example:8443") == (
        security_keys.RelyingParty(id="mail.example", origin="https://mail.example:8443"))
    settings.MAILHOST_WEBAUTHN_RP_ID = "example"
    assert security_keys.relying_party(scheme="https", host="mail.example").id == "example"


def test_one_removes_only_ones_own_keys():
    owner = make_mailbox("val@keys.example").user
    other = make_mailbox("wes@keys.example").user
    key = enrol(owner, SoftwareAuthenticator())
    client = Client()
    client.force_login(other)
    response = client.post("/mail/settings/two-step/", {"action": "key-remove", "id": key.pk})
    assert response.status_code == 404
    assert SecurityKey.objects.filter(pk=key.pk).exists()
    client.force_login(owner)
    response = client.post("/mail/settings/two-step/", {"action": "key-remove", "id": key.pk})
    assert response.status_code == 302 and not SecurityKey.objects.filter(pk=key.pk).exists()
