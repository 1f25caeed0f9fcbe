"""The second factor of the web sign-in: TOTP (RFC 6238) with recovery codes,
here; security keys (WebAuthn) in apps/directory/security_keys.py. A person
with either is asked for one after the password.

Enrolment is two steps (a pending key, then the first code confirms it), so a
mistyped key in the authenticator app never locks anyone out. Once confirmed,
sign-in asks for a code; each code is accepted once (RFC 6238 §5.2), each
recovery code too. Recovery codes carry 80 random bits, so a plain digest
stores them safely (as API tokens are stored) and can be compared directly.
"""

from __future__ import annotations

import hmac
import time

import pyotp
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from apps.directory.access import is_admin
from apps.directory.audit import Actor, record
from apps.directory.codes import code_digest, new_code, normal
from apps.directory.models import SecondFactor, User
from mailhost.compiled import CompiledQuery
from mailhost.errors import Conflict, Invalid

ISSUER = "Mailhost"
RECOVERY_CODES = 10
# RFC 6238 §5.2: accept the previous and the next time step too (clock drift).
VALID_WINDOW = 1


def kind_of(user: User) -> str:
    """The audit log's name for whose second factor it is."""
    return "administrator" if is_admin(user) else "account"


def has_totp(user: User) -> bool:
    return SecondFactor.objects.filter(user=user, confirmed=True).exists()


def enrolled_users() -> Q:
    """Users with a second factor of either kind, as a filter on User."""
    return Q(second_factor__confirmed=True) | Q(security_keys__isnull=False)


def enrolled_exists() -> Exists:
    """Whether the outer query's user has a second factor, to annotate a list
    of users without a query per row."""
    return Exists(User.objects.filter(enrolled_users(), pk=OuterRef("pk")))


def is_enrolled(user: User) -> bool:
    """Whether sign-in asks ``user`` for a second factor (one query, compiled
    once: every IMAP and POP3 login with the mailbox password asks)."""
    return _ENROLLED.first(user.pk) is not None


_ENROLLED = CompiledQuery(lambda user_id: User.objects.filter(enrolled_users(), pk=user_id)
                          .order_by().values_list("pk")[:1], int)


def begin_enrolment(user: User) -> SecondFactor:
    """A new pending key for ``user``, replacing an earlier pending one."""
    with transaction.atomic():
        if has_totp(user):
            raise Conflict("two-factor sign-in is already on", field="code")
        SecondFactor.objects.filter(user=user).delete()
        return SecondFactor.objects.create(user=user, secret=pyotp.random_base32())


def provisioning_uri(factor: SecondFactor) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(factor.secret).provisioning_uri(name=factor.user.email,
                                                      issuer_name=ISSUER)


def qr_code(factor: SecondFactor) -> str:
    """The provisioning URI as a QR code, an SVG ``data:`` URI for an <img>
    (the pages' Content-Security-Policy allows data: images)."""
    import segno  # only the enrolment page draws one

    # Black on white whatever the page's colour scheme: scanners want contrast.
    return segno.make(provisioning_uri(factor), error="m").svg_data_uri(
        scale=5, border=2, dark="#000", light="#fff")


def _new_recovery_codes() -> list[str]:
    return [new_code(4) for _ in range(RECOVERY_CODES)]  # about 79 bits each


def _totp_step(factor: SecondFactor, code: str) -> int | None:
    """The time step a TOTP code is valid for, None when it is not valid."""
    code = normal(code)
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(factor.secret)
    now = int(time.time())
    for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
        at = now + offset * totp.interval
        if hmac.compare_digest(totp.at(at), code):
            return totp.timecode(at)
    return None


def confirm_enrolment(user: User, code: str, *, actor: Actor | None = None) -> list[str]:
    """Turn the pending key on with its first code; the recovery codes, to be
    shown this once."""
    with transaction.atomic():
        factor = SecondFactor.objects.select_for_update().filter(
            user=user, confirmed=False).first()
        if factor is None:
            raise Invalid("start the set-up first", field="code")
        step = _totp_step(factor, code)
        if step is None:
            raise Invalid("that code is not right; check the app's clock and try again",
                          field="code")
        codes = _new_recovery_codes()
        factor.confirmed = True
        factor.last_step = step
        factor.recovery_codes = [code_digest(c) for c in codes]
        factor.save()
        record(actor, "2fa enrol", kind_of(user), user.email)
    return codes


def verify(user: User, code: str, *, actor: Actor | None = None) -> bool:
    """Whether ``code`` (a current TOTP code, or an unused recovery code) is
    right for ``user``'s confirmed second factor; uses the code up."""
    with transaction.atomic():
        factor = SecondFactor.objects.select_for_update().filter(
            user=user, confirmed=True).first()
        if factor is None:
            return False
        step = _totp_step(factor, code)
        if step is not None:
            if step <= factor.last_step:
                return False  # replayed
            factor.last_step = step
            factor.save(update_fields=["last_step"])
            return True
        digest = code_digest(code)
        remaining = [d for d in factor.recovery_codes if not hmac.compare_digest(d, digest)]
        if len(remaining) == len(factor.recovery_codes):
            return False
        factor.recovery_codes = remaining
        factor.save(update_fields=["recovery_codes"])
        record(actor or Actor(user), "2fa recovery code used", kind_of(user), user.email,
               changes={"recovery codes left": len(remaining)})
        return True


def disable(user: User, code: str, *, actor: Actor | None = None) -> None:
    """Turn the second factor off; it takes a valid code, so that a session
    left open is not enough."""
    if not verify(user, code, actor=actor):
        raise Invalid("that code is not right", field="code")
    with transaction.atomic():
        SecondFactor.objects.filter(user=user).delete()
        record(actor, "2fa disable", kind_of(user), user.email)


def reset(user: User, *, actor: Actor | None = None) -> None:
    """A superadmin's reset of someone else's second factors, authenticator
    app and security keys alike (a lost phone, a lost key)."""
    with transaction.atomic():
        removed = SecondFactor.objects.filter(user=user).delete()[0]
        removed += user.security_keys.all().delete()[0]
        if removed:
            record(actor, "2fa reset", kind_of(user), user.email)
