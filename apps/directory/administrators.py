"""Administrator accounts: superadmins, and domain admins with the domains they
manage. The admin panel and the API (``/api/v1/admins/``) both call these."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.hashers import make_password
from django.db import transaction

from apps.directory.addresses import normalize_address
from apps.directory.audit import SECRET_CHANGED, Actor, record
from apps.directory.models import Domain, Role, User
from apps.directory.services import _about, _validate_password
from mailhost.errors import Conflict, Invalid

ADMIN_ROLES = (Role.SUPERADMIN, Role.DOMAIN_ADMIN)


def _check_role(role: str) -> None:
    if role not in ADMIN_ROLES:
        raise Invalid(f"an administrator's role is {' or '.join(ADMIN_ROLES)}", field="role")


def _domain_names(domains: Iterable[Domain]) -> list[str]:
    return sorted(domain.name for domain in domains)


def create_administrator(
    email: str, password: str, *, role: str = Role.DOMAIN_ADMIN,
    domains: Iterable[Domain] = (), display_name: str = "", actor: Actor | None = None,
) -> User:
    """A new administrator account. A domain admin manages only ``domains``;
    a superadmin everything (its domain list stays empty)."""
    with _about("email"):
        email = normalize_address(email)
    _check_role(role)
    domains = list(domains) if role == Role.DOMAIN_ADMIN else []
    with transaction.atomic():
        if User.objects.filter(email=email).exists():
            raise Conflict(f"an account {email} exists already", field="email")
        user = User(email=email, role=role, display_name=display_name.strip())
        _validate_password(password, user)
        user.set_password(password)
        user.save()
        user.administered_domains.set(domains)
        record(actor, "create", "administrator", email, changes={
            "role": [None, role], "domains": [None, _domain_names(domains)],
            "password": SECRET_CHANGED})
    return user


def _last_superadmin(user: User) -> bool:
    return (user.role == Role.SUPERADMIN and user.is_active and not User.objects.filter(
        role=Role.SUPERADMIN, is_active=True).exclude(pk=user.pk).exists())


def update_administrator(
    user: User, *, role: str | None = None, domains: Iterable[Domain] | None = None,
    is_active: bool | None = None, display_name: str | None = None,
    password: str | None = None, actor: Actor | None = None,
) -> User:
    """Change an administrator; None leaves a setting as it is. The last active
    superadmin can be neither demoted nor disabled: someone must remain who
    can manage the platform."""
    if role is not None:
        _check_role(role)
    with transaction.atomic():
        demoted = (role not in (None, Role.SUPERADMIN)) or is_active is False
        if demoted and _last_superadmin(user):
            raise Conflict("the last superadmin stays a superadmin", field="role")
        changes: dict[str, object] = {}
        for name, value in (("role", role), ("is_active", is_active),
                            ("display_name", None if display_name is None
                             else display_name.strip())):
            if value is not None and value != getattr(user, name):
                changes[name] = [getattr(user, name), value]
                setattr(user, name, value)
        if password is not None:
            _validate_password(password, user)
            user.password = make_password(password)
            changes["password"] = SECRET_CHANGED
        if changes:
            user.save()
        before = _domain_names(user.administered_domains.all())
        wanted = None if domains is None else list(domains)
        if user.role == Role.SUPERADMIN:
            wanted = []  # a superadmin manages every domain
        if wanted is not None and _domain_names(wanted) != before:
            user.administered_domains.set(wanted)
            changes["domains"] = [before, _domain_names(wanted)]
        if changes:
            record(actor, "password" if set(changes) == {"password"} else "update",
                   "administrator", user.email, changes=changes)
    return user


def delete_administrator(user: User, *, actor: Actor | None = None) -> None:
    """Remove an administrator account (its mailbox, if it has one, stays a
    mailbox: only the administrator role goes)."""
    with transaction.atomic():
        if actor is not None and actor.user is not None and actor.user.pk == user.pk:
            raise Conflict("you cannot remove your own account", field="email")
        if _last_superadmin(user):
            raise Conflict("the last superadmin cannot be removed", field="email")
        record(actor, "delete", "administrator", user.email)
        if hasattr(user, "mailbox"):
            user.role = Role.MAILBOX_USER
            user.save(update_fields=["role"])
            user.administered_domains.clear()
        else:
            user.delete()
