"""Security keys and passkeys as a second factor (WebAuthn Level 3, through
Duo Labs' ``webauthn`` library): registered after a signed-in person names
them, asked for after the password at sign-in, several per person.

The front end hands the browser the options of a ceremony and gives back its
answer; the challenge in between is kept server-side, in ``challenges`` (the
web session), and taken out before it is checked, so each is good for one
answer only (§13.4.3). The relying party is the host the page was asked for,
or ``MAILHOST_WEBAUTHN_RP_ID``; the origin is checked against the page's own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http.request import split_domain_port
from django.utils import timezone
from django.utils.crypto import salted_hmac
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.options_to_json_dict import options_to_json_dict
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from apps.directory.audit import Actor, record
from apps.directory.models import Mailbox, SecurityKey, User
from apps.directory.second_factor import has_totp, kind_of
from mailhost.errors import Conflict, Invalid

RP_NAME = "Mailhost"
# Where the pending challenge waits in the session, and for how long: the
# browser is told the same (the options' timeout), §5.4 and §5.5.
CHALLENGE_KEY = "webauthn_challenge"
CHALLENGE_SECONDS = 300
REGISTER = "register"
SIGN_IN = "sign in"


@dataclass(frozen=True)
class RelyingParty:
    """Who the keys are for (its ID, hashed into every authenticator answer)
    and the origin the browser must report in its client data (§7.1 step 9)."""

    id: str
    origin: str


def relying_party(*, scheme: str, host: str) -> RelyingParty:
    """The relying party for a page at ``scheme://host`` (``host`` as the
    request named it, validated against ALLOWED_HOSTS, with its port)."""
    domain, _ = split_domain_port(host)
    return RelyingParty(id=settings.MAILHOST_WEBAUTHN_RP_ID or domain,
                        origin=f"{scheme}://{host}")


def _user_handle(user: User) -> bytes:
    """A stable opaque user handle: not the email address, which §14.6.1
    says must not be given to authenticators as the handle."""
    return salted_hmac("mailhost.webauthn.user-handle", str(user.pk)).digest()


def _descriptors(user: User) -> list[PublicKeyCredentialDescriptor]:
    known = {transport.value for transport in AuthenticatorTransport}
    return [PublicKeyCredentialDescriptor(
                id=base64url_to_bytes(key.credential_id),
                transports=[AuthenticatorTransport(t) for t in key.transports if t in known])
            for key in user.security_keys.all()]


def _remember(challenges: MutableMapping[str, Any], purpose: str, user: User,
              challenge: bytes, rp: RelyingParty) -> None:
    challenges[CHALLENGE_KEY] = {"purpose": purpose, "user": user.pk, "rp_id": rp.id,
                                 "challenge": bytes_to_base64url(challenge), "at": time.time()}


def _take_challenge(challenges: MutableMapping[str, Any], purpose: str, user: User,
                    rp: RelyingParty) -> bytes | None:
    """The pending challenge for this ceremony, removed so that it answers
    once; None when there is none, it has expired or it was for another."""
    pending = challenges.pop(CHALLENGE_KEY, None)
    if (not isinstance(pending, dict) or pending.get("purpose") != purpose
            or pending.get("user") != user.pk or pending.get("rp_id") != rp.id
            or time.time() - pending.get("at", 0) > CHALLENGE_SECONDS):
        return None
    return base64url_to_bytes(pending["challenge"])


def registration_options(user: User, *, rp: RelyingParty,
                         challenges: MutableMapping[str, Any]) -> dict[str, Any]:
    """The options for ``navigator.credentials.create()`` (as JSON with
    base64url binaries, §5.4); the keys ``user`` has are excluded, so one key
    is not registered twice."""
    challenge = secrets.token_bytes(32)  # §13.4.3: at least 16 random bytes
    options = generate_registration_options(
        rp_id=rp.id, rp_name=RP_NAME, user_name=user.email, user_id=_user_handle(user),
        challenge=challenge, timeout=CHALLENGE_SECONDS * 1000,
        # A second factor after the password: no need to fill the key's
        # storage with a resident credential, nor to ask for its PIN.
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.DISCOURAGED),
        exclude_credentials=_descriptors(user))
    _remember(challenges, REGISTER, user, challenge, rp)
    return options_to_json_dict(options)


def register(user: User, answer: str, *, name: str, rp: RelyingParty,
             challenges: MutableMapping[str, Any], actor: Actor | None = None) -> SecurityKey:
    """Check the browser's ``answer`` to the registration options (§7.1) and
    keep the new credential as ``name``."""
    name = " ".join(name.split())
    if not name:
        raise Invalid("give the key a name, such as “Blue YubiKey” or “Laptop”", field="name")
    if len(name) > SecurityKey._meta.get_field("name").max_length:  # type: ignore[operator]
        raise Invalid("the name is too long", field="name")
    if not answer:
        raise Invalid("your browser did not register a key (it needs JavaScript and WebAuthn)")
    challenge = _take_challenge(challenges, REGISTER, user, rp)
    if challenge is None:
        raise Invalid("the request for a key has expired; try again")
    try:
        credential = parse_registration_credential_json(answer)
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as error:
        raise Invalid(f"the key's answer was not accepted ({error})") from None
    transports = [t.value for t in credential.response.transports or []]
    try:
        with transaction.atomic():
            key = SecurityKey.objects.create(
                user=user, name=name, credential_id=bytes_to_base64url(verified.credential_id),
                public_key=verified.credential_public_key, sign_count=verified.sign_count,
                transports=transports)
            record(actor, "security key add", kind_of(user), f"{user.email}: {name}")
    except IntegrityError:
        raise Conflict("that key is registered already, or the name is taken",
                       field="name") from None
    return key


def authentication_options(user: User, *, rp: RelyingParty,
                           challenges: MutableMapping[str, Any]) -> dict[str, Any]:
    """The options for ``navigator.credentials.get()`` (§5.5), allowing any
    of ``user``'s keys."""
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=rp.id, challenge=challenge, timeout=CHALLENGE_SECONDS * 1000,
        allow_credentials=_descriptors(user),
        user_verification=UserVerificationRequirement.DISCOURAGED)
    _remember(challenges, SIGN_IN, user, challenge, rp)
    return options_to_json_dict(options)


def verify(user: User, answer: str, *, rp: RelyingParty,
           challenges: MutableMapping[str, Any]) -> bool:
    """Whether ``answer`` is a valid assertion (§7.2) by one of ``user``'s
    keys to the pending challenge; records the key's use and new counter."""
    challenge = _take_challenge(challenges, SIGN_IN, user, rp)
    if challenge is None:
        return False
    try:
        credential = parse_authentication_credential_json(answer)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        return False
    with transaction.atomic():
        key = (SecurityKey.objects.select_for_update()
               .filter(user=user, credential_id=bytes_to_base64url(credential.raw_id)).first())
        if key is None:
            return False
        try:
            verified = verify_authentication_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
                expected_origin=rp.origin, credential_public_key=bytes(key.public_key),
                # §6.1.1: a counter that does not grow is a cloned key's sign.
                credential_current_sign_count=key.sign_count)
        except (WebAuthnException, ValueError, KeyError, TypeError):
            return False
        key.sign_count = verified.new_sign_count
        key.last_used = timezone.now()
        key.save(update_fields=["sign_count", "last_used"])
    return True


def remove(key: SecurityKey, *, actor: Actor | None = None) -> None:
    """Remove a key; not the last second factor of someone whose domain
    requires one."""
    with transaction.atomic():
        user = key.user
        required = Mailbox.objects.filter(user=user, domain__second_factor_required=True).exists()
        others = user.security_keys.exclude(pk=key.pk).exists()
        if required and not (others or has_totp(user)):
            raise Conflict("your domain requires a second factor: add another key or an "
                           "authenticator app before removing this one")
        key.delete()
        record(actor, "security key remove", kind_of(user), f"{user.email}: {key.name}")
