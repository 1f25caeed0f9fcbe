"""The API's permission classes and token scoping, on top of the one access
module every front end shares (apps/directory/access.py)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.api.models import ApiToken
from apps.directory.access import (
    accounts_for,
    administrators_for,
    aliases_for,
    domains_for,
    is_admin,
    is_superadmin,
    mailboxes_for,
    may_manage_address,
    may_manage_domain,
)
from apps.directory.models import User

__all__ = ["accounts_for", "administrators_for", "aliases_for", "domains_for", "is_admin",
           "mailboxes_for", "may_manage_address", "may_manage_domain", "tokens_for"]


def tokens_for(user: User | AnonymousUser) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user__in=accounts_for(user))


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
        return request.method in ("GET", "HEAD", "OPTIONS") or is_superadmin(user)


class IsAdministratorOrSelfUpdate(BasePermission):
    """Administrators do everything; a mailbox user may read and change (PATCH)
    their own mailbox, which the queryset already restricts them to."""

    message = "only administrators may create or delete mailboxes"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return is_admin(user) or request.method in ("GET", "HEAD", "OPTIONS", "PATCH")


class IsSuperadmin(BasePermission):
    message = "only a superadmin may manage administrators"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and is_superadmin(user))
