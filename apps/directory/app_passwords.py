"""App passwords: one per mail program, so that a phone or a laptop signs in
to IMAP, POP3, SMTP and ManageSieve without the mailbox password, and losing
one device means revoking one password. ``directory.services.authenticate``
checks them with the same lockout rules as the mailbox password. A mailbox
(or every mailbox of a domain) can require them: its own password then signs
in to the web only."""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.directory import second_factor
from apps.directory.audit import Actor, record
from apps.directory.codes import code_digest, new_code
from apps.directory.models import AppPassword, Mailbox
from mailhost.compiled import CompiledQuery
from mailhost.errors import Conflict, Invalid

# Five groups of four: about 99 random bits, typed as xxxx-xxxx-xxxx-xxxx-xxxx.
GROUPS = 5
# The protocol name of the web sign-in, where app passwords are not accepted.
WEB = "web"
# Last use is written at most this often per app password (a client that
# opens a connection a minute would otherwise write on every login).
USE_RECORD_INTERVAL = timedelta(minutes=5)


def create(mailbox: Mailbox, name: str, *, actor: Actor | None = None,
           ) -> tuple[AppPassword, str]:
    """A new app password named ``name`` for ``mailbox``, and its secret, to
    be shown this once (only a digest is kept)."""
    name = " ".join(name.split())
    if not name:
        raise Invalid("give the app password a name, such as the device it is for",
                      field="name")
    if len(name) > AppPassword._meta.get_field("name").max_length:  # type: ignore[operator]
        raise Invalid("the name is too long", field="name")
    secret = new_code(GROUPS)
    try:
        with transaction.atomic():
            app_password = AppPassword.objects.create(mailbox=mailbox, name=name,
                                                      digest=code_digest(secret))
            record(actor, "create", "app password", f"{mailbox.address}: {name}",
                   domain_name=mailbox.domain.name)
    except IntegrityError:
        raise Conflict(f"there is already an app password named {name!r}",
                       field="name") from None
    return app_password, secret


def revoke(app_password: AppPassword, *, actor: Actor | None = None) -> None:
    """The password stops working at once: every login looks it up."""
    with transaction.atomic():
        app_password.delete()
        record(actor, "revoke", "app password",
               f"{app_password.mailbox.address}: {app_password.name}",
               domain_name=app_password.mailbox.domain.name)


def matching(login: str, secret: str) -> AppPassword | None:
    """The app password of mailbox ``login`` whose secret this is. One query
    whether or not the login exists, so that it tells nothing either way
    (a second one only for a match), compiled once: every IMAP and POP3
    login asks, and most logins use the mailbox password."""
    digest = code_digest(secret)
    if _MATCHING.first(digest, login) is None:
        return None
    return (AppPassword.objects.select_related("mailbox__user", "mailbox__domain")
            .filter(digest=digest, mailbox__address=login).first())


_MATCHING = CompiledQuery(lambda digest, login: AppPassword.objects.filter(
    digest=digest, mailbox__address=login).order_by().values_list("pk")[:1], str, str)


def note_use(app_password: AppPassword, *, remote_ip: str | None, protocol: str) -> None:
    """Record when, from where and by which protocol it was last used."""
    now = timezone.now()
    if (app_password.last_used is not None
            and now - app_password.last_used < USE_RECORD_INTERVAL
            and app_password.last_used_ip == remote_ip
            and app_password.last_used_protocol == protocol):
        return
    AppPassword.objects.filter(pk=app_password.pk).update(
        last_used=now, last_used_ip=remote_ip, last_used_protocol=protocol)


def required(mailbox: Mailbox) -> bool:
    """Mail programs must use app passwords: the mailbox's own choice, its
    domain's policy, or a second factor (which a mail program cannot ask
    for, so the password alone must not be enough there)."""
    domain = mailbox.domain
    return (mailbox.password_web_only or domain.app_passwords_required
            or domain.second_factor_required or second_factor.is_enrolled(mailbox.user))


def password_accepted(mailbox: Mailbox, protocol: str) -> bool:
    """Whether the mailbox password may sign in over ``protocol``."""
    return protocol == WEB or not required(mailbox)
