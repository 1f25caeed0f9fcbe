"""What each role may see: every API query starts from one of these querysets,
so that an object outside one's rights is simply not found (404)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.api.models import ApiToken
from apps.directory.models import Alias, Domain, Mailbox, Role, User


def _role(user: User | AnonymousUser) -> str | None:
    # The schema generator asks for querysets with an anonymous user.
    return getattr(user, "role", None)


def is_admin(user: User | AnonymousUser) -> bool:
    return _role(user) in (Role.SUPERADMIN, Role.DOMAIN_ADMIN)


def domains_for(user: User | AnonymousUser) -> QuerySet[Domain]:
    if _role(user) == Role.SUPERADMIN:
        return Domain.objects.all()
    if _role(user) == Role.DOMAIN_ADMIN:
        return Domain.objects.filter(admins=user)
    return Domain.objects.none()


def mailboxes_for(user: User | AnonymousUser) -> QuerySet[Mailbox]:
    if _role(user) == Role.SUPERADMIN:
        return Mailbox.objects.all()
    if _role(user) == Role.DOMAIN_ADMIN:
        return Mailbox.objects.filter(domain__admins=user)
    return Mailbox.objects.filter(user_id=user.pk)


def aliases_for(user: User | AnonymousUser) -> QuerySet[Alias]:
    if _role(user) == Role.SUPERADMIN:
        return Alias.objects.all()
    if _role(user) == Role.DOMAIN_ADMIN:
        return Alias.objects.filter(domain__admins=user)
    return Alias.objects.none()


def accounts_for(user: User | AnonymousUser) -> QuerySet[User]:
    """Accounts whose tokens ``user`` may create, list and revoke."""
    if _role(user) == Role.SUPERADMIN:
        return User.objects.all()
    if _role(user) == Role.DOMAIN_ADMIN:
        return User.objects.filter(pk=user.pk) | User.objects.filter(
            mailbox__domain__admins=user)
    return User.objects.filter(pk=user.pk)


def tokens_for(user: User | AnonymousUser) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user__in=accounts_for(user))


def may_manage_domain(user: User, domain_name: str) -> bool:
    return domains_for(user).filter(name=domain_name).exists()


class IsAdministrator(BasePermission):
    """Superadmins and domain admins; mailbox users are refused (403)."""

    message = "only administrators may do this"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated and is_admin(request.user))


class IsSuperadminOrReadOnly(BasePermission):
    message = "only a superadmin may change domains"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in ("GET", "HEAD", "OPTIONS") or _role(user) == Role.SUPERADMIN


class IsAdministratorOrSelfUpdate(BasePermission):
    """Administrators do everything; a mailbox user may read and change (PATCH)
    their own mailbox, which the queryset already restricts them to."""

    message = "only administrators may create or delete mailboxes"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return is_admin(user) or request.method in ("GET", "HEAD", "OPTIONS", "PATCH")
