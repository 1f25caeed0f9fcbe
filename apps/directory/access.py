"""Who may see what: the one set of rules that the REST API, the admin panel and
the webmail all start their queries from, so that an object outside one's rights
is simply not found (404) whichever front end asks."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from apps.directory.addresses import normalize_domain
from apps.directory.models import Alias, AuditEntry, Domain, Mailbox, Role, User
from mailhost.errors import Invalid


def role_of(user: User | AnonymousUser) -> str | None:
    # Schema generators and anonymous visitors have no role.
    return getattr(user, "role", None)


def is_admin(user: User | AnonymousUser) -> bool:
    return role_of(user) in (Role.SUPERADMIN, Role.DOMAIN_ADMIN)


def is_superadmin(user: User | AnonymousUser) -> bool:
    return role_of(user) == Role.SUPERADMIN


def domains_for(user: User | AnonymousUser) -> QuerySet[Domain]:
    if role_of(user) == Role.SUPERADMIN:
        return Domain.objects.all()
    if role_of(user) == Role.DOMAIN_ADMIN:
        return Domain.objects.filter(admins=user)
    return Domain.objects.none()


def mailboxes_for(user: User | AnonymousUser) -> QuerySet[Mailbox]:
    if role_of(user) == Role.SUPERADMIN:
        return Mailbox.objects.all()
    if role_of(user) == Role.DOMAIN_ADMIN:
        return Mailbox.objects.filter(domain__admins=user)
    return Mailbox.objects.filter(user_id=user.pk)


def aliases_for(user: User | AnonymousUser) -> QuerySet[Alias]:
    if role_of(user) == Role.SUPERADMIN:
        return Alias.objects.all()
    if role_of(user) == Role.DOMAIN_ADMIN:
        return Alias.objects.filter(domain__admins=user)
    return Alias.objects.none()


def accounts_for(user: User | AnonymousUser) -> QuerySet[User]:
    """Accounts ``user`` acts for: their own, and as an administrator those of
    the mailboxes they manage (tokens, passwords)."""
    if role_of(user) == Role.SUPERADMIN:
        return User.objects.all()
    if role_of(user) == Role.DOMAIN_ADMIN:
        return User.objects.filter(pk=user.pk) | User.objects.filter(
            mailbox__domain__admins=user)
    return User.objects.filter(pk=user.pk)


def may_manage_domain(user: User, domain_name: str) -> bool:
    return domains_for(user).filter(name=domain_name).exists()


def may_manage_address(user: User, address: str) -> bool:
    """Whether ``user`` may create an address (mailbox, alias) in its domain.
    An address whose domain part is not even valid is not refused here: the
    directory services refuse it with an error that names the field."""
    if role_of(user) == Role.SUPERADMIN:
        return True
    try:
        domain_name = normalize_domain(address.strip().rpartition("@")[2])
    except Invalid:
        return True
    return may_manage_domain(user, domain_name)


def administrators_for(user: User | AnonymousUser) -> QuerySet[User]:
    """Administrator accounts ``user`` may see and change: superadmins manage
    every administrator; a domain admin none (not even the list)."""
    if role_of(user) == Role.SUPERADMIN:
        return User.objects.filter(role__in=[Role.SUPERADMIN, Role.DOMAIN_ADMIN])
    return User.objects.none()


def audit_entries_for(user: User | AnonymousUser) -> QuerySet[AuditEntry]:
    """Superadmins read the whole audit log; a domain admin the entries about
    their domains' objects (by domain name, so deleted objects' entries too)."""
    if role_of(user) == Role.SUPERADMIN:
        return AuditEntry.objects.all()
    if role_of(user) == Role.DOMAIN_ADMIN:
        return AuditEntry.objects.filter(
            domain_name__in=Domain.objects.filter(admins=user).values("name"))
    return AuditEntry.objects.none()
