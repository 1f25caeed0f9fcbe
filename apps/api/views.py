"""Provisioning API, version 1. Views are thin: pick the objects the caller
may see (apps.api.access), call a directory service, format the answer."""

from __future__ import annotations

from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import filters, generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from apps.api import access, serializers
from apps.api import services as token_services
from apps.api.models import ApiToken
from apps.directory import administrators, app_passwords, second_factor, services
from apps.directory.addresses import normalize_domain
from apps.directory.audit import Actor
from apps.directory.dns import dns_records
from apps.directory.models import Alias, AppPassword, Domain, Mailbox, User
from apps.store.services import usage_expression, with_domain_usage
from mailhost.errors import Invalid, NotFound


class CrudViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet,
):
    """List, create, read, change (PATCH) and delete; writes go to a service."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    update_serializer_class: type[BaseSerializer]

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action in ("update", "partial_update"):
            return self.update_serializer_class
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError  # each resource calls its own service

    def update_object(self, instance: Any, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.create_object(serializer.validated_data)
        return Response(self.shown(instance), status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        self.update_object(instance, serializer.validated_data)
        return Response(self.shown(instance))

    def shown(self, instance: Any) -> Any:
        """The object as a list page shows it (annotations included)."""
        return self.get_serializer(self.get_queryset().get(pk=instance.pk)).data


# --- domains ---------------------------------------------------------------------


class DomainFilter(django_filters.FilterSet):
    class Meta:
        model = Domain
        fields = ["active"]


class DomainViewSet(CrudViewSet):
    serializer_class = serializers.DomainSerializer
    update_serializer_class = serializers.DomainUpdateSerializer
    permission_classes = [access.IsSuperadminOrReadOnly]
    filterset_class = DomainFilter
    search_fields = ["name"]
    ordering_fields = ["name", "created", "active"]
    ordering = ["name"]

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "retrieve":
            return serializers.DomainDetailSerializer
        return super().get_serializer_class()

    def get_queryset(self) -> QuerySet[Domain]:
        return with_domain_usage(access.domains_for(self.request.user))

    def create_object(self, data: dict[str, Any]) -> Domain:
        domain = services.create_domain(
            data["name"], default_quota=data.get("default_quota"),
            max_mailboxes=data.get("max_mailboxes", 0), active=data.get("active", True),
            greylisting=data.get("greylisting", False),
            spam_threshold=data.get("spam_threshold"), actor=Actor.of(self.request),
        )
        if data.get("app_passwords_required") or data.get("second_factor_required"):
            services.update_domain(
                domain, app_passwords_required=data.get("app_passwords_required"),
                second_factor_required=data.get("second_factor_required"),
                actor=Actor.of(self.request))
        return domain

    def update_object(self, instance: Domain, data: dict[str, Any]) -> None:
        services.update_domain(
            instance, active=data.get("active"), default_quota=data.get("default_quota"),
            max_mailboxes=data.get("max_mailboxes"), greylisting=data.get("greylisting"),
            spam_threshold=data.get("spam_threshold", services.KEEP),
            app_passwords_required=data.get("app_passwords_required"),
            second_factor_required=data.get("second_factor_required"),
            actor=Actor.of(self.request),
        )

    def perform_destroy(self, instance: Domain) -> None:
        services.delete_domain(instance, actor=Actor.of(self.request))

    @extend_schema(responses=serializers.DnsRecordSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[],
            pagination_class=None)
    def dns_records(self, request: Request, pk: str | None = None) -> Response:
        """The DNS records to publish for the domain: MX, SPF, a DKIM key record
        for each active key (RSA and Ed25519), DMARC, the client SRV records and
        autoconfiguration names, MTA-STS and TLS reporting, the same as
        ``manage.py dnsrecords`` prints."""
        records = dns_records(self.get_object(), mail_host=settings.MAILHOST_HOSTNAME)
        return Response(serializers.DnsRecordSerializer(records, many=True).data)


# --- mailboxes -------------------------------------------------------------------


class AddressFilter(django_filters.FilterSet):
    domain = django_filters.CharFilter(method="filter_domain", help_text="domain name")

    def filter_domain(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        try:
            return queryset.filter(domain__name=normalize_domain(value))
        except Invalid:
            return queryset.none()


class MailboxFilter(AddressFilter):
    class Meta:
        model = Mailbox
        fields = ["domain", "active"]


class MailboxViewSet(CrudViewSet):
    serializer_class = serializers.MailboxSerializer
    update_serializer_class = serializers.MailboxUpdateSerializer
    permission_classes = [access.IsAdministratorOrSelfUpdate]
    filterset_class = MailboxFilter
    search_fields = ["address"]
    ordering_fields = ["address", "created", "quota", "active", "used_bytes"]
    ordering = ["address"]

    def get_queryset(self) -> QuerySet[Mailbox]:
        return (access.mailboxes_for(self.request.user).select_related("domain", "user")
                .annotate(used_bytes=usage_expression("mailbox")))

    def create_object(self, data: dict[str, Any]) -> Mailbox:
        check_domain_rights(self.request.user, data["address"])
        return services.create_mailbox(
            data["address"], data["password"], quota=data.get("quota"),
            display_name=data.get("user", {}).get("display_name", ""),
            actor=Actor.of(self.request),
        )

    def update_object(self, instance: Mailbox, data: dict[str, Any]) -> None:
        if not access.is_admin(self.request.user):
            refused = {"quota", "active"} & set(data)
            if refused:
                raise PermissionDenied(
                    f"only an administrator may change {', '.join(sorted(refused))}")
        services.update_mailbox(
            instance, quota=data.get("quota"), active=data.get("active"),
            display_name=data.get("user", {}).get("display_name"), password=data.get("password"),
            forward_to=data.get("forward_to"), forward_keep_copy=data.get("forward_keep_copy"),
            password_web_only=data.get("password_web_only"), actor=Actor.of(self.request),
        )

    def perform_destroy(self, instance: Mailbox) -> None:
        services.delete_mailbox(instance, actor=Actor.of(self.request))


def check_domain_rights(user: User, address: str) -> None:
    """403 for an address in a domain the caller does not administer. A bad
    address, or one in a domain not hosted here, is left to the service, which
    names the field."""
    if not access.may_manage_address(user, address):
        domain_name = address.strip().rpartition("@")[2]
        raise PermissionDenied(f"you do not administer the domain {domain_name}")


# --- aliases ---------------------------------------------------------------------


class AliasFilter(AddressFilter):
    class Meta:
        model = Alias
        fields = ["domain", "active"]


class AliasViewSet(CrudViewSet):
    """Aliases, catch-alls (``@domain``) and forwards to external addresses."""

    serializer_class = serializers.AliasSerializer
    update_serializer_class = serializers.AliasUpdateSerializer
    permission_classes = [access.IsAdministrator]
    filterset_class = AliasFilter
    search_fields = ["address"]
    ordering_fields = ["address", "created", "active"]
    ordering = ["address"]

    def get_queryset(self) -> QuerySet[Alias]:
        return access.aliases_for(self.request.user).select_related("domain")

    def create_object(self, data: dict[str, Any]) -> Alias:
        check_domain_rights(self.request.user, data["address"])
        return services.create_alias(data["address"], data["destinations"],
                                     actor=Actor.of(self.request))

    def update_object(self, instance: Alias, data: dict[str, Any]) -> None:
        services.update_alias(instance, destinations=data.get("destinations"),
                              active=data.get("active"), actor=Actor.of(self.request))

    def perform_destroy(self, instance: Alias) -> None:
        services.delete_alias(instance, actor=Actor.of(self.request))


# --- administrators ----------------------------------------------------------------


class AdministratorFilter(django_filters.FilterSet):
    class Meta:
        model = User
        fields = ["role", "is_active"]


class AdministratorViewSet(CrudViewSet):
    """Administrator accounts (superadmins only): domain admins with the
    domains they manage, and other superadmins."""

    serializer_class = serializers.AdministratorSerializer
    update_serializer_class = serializers.AdministratorUpdateSerializer
    permission_classes = [access.IsSuperadmin]
    filterset_class = AdministratorFilter
    search_fields = ["email"]
    ordering_fields = ["email", "date_joined"]
    ordering = ["email"]

    def get_queryset(self) -> QuerySet[User]:
        return (access.administrators_for(self.request.user)
                .prefetch_related("administered_domains")
                .annotate(two_factor=second_factor.enrolled_exists()))

    def create_object(self, data: dict[str, Any]) -> User:
        return administrators.create_administrator(
            data["email"], data["password"], role=data["role"],
            domains=data.get("administered_domains", []),
            display_name=data.get("display_name", ""), actor=Actor.of(self.request))

    def update_object(self, instance: User, data: dict[str, Any]) -> None:
        administrators.update_administrator(
            instance, role=data.get("role"), domains=data.get("administered_domains"),
            is_active=data.get("is_active"), display_name=data.get("display_name"),
            password=data.get("password"), actor=Actor.of(self.request))

    def perform_destroy(self, instance: User) -> None:
        administrators.delete_administrator(instance, actor=Actor.of(self.request))


# --- the caller ------------------------------------------------------------------


class MeView(generics.GenericAPIView):
    """The signed-in account: its role, the domains it administers, its mailbox."""

    serializer_class = serializers.MeSerializer
    permission_classes = [IsAuthenticated]

    def account(self) -> User:
        user = (User.objects.prefetch_related("administered_domains")
                .get(pk=self.request.user.pk))
        mailbox = (Mailbox.objects.select_related("domain", "user")
                   .annotate(used_bytes=usage_expression("mailbox"))
                   .filter(user=user).first())
        # Cached even when None, so that serializing asks no further query.
        User.mailbox.related.set_cached_value(user, mailbox)
        return user

    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(self.account()).data)

    def patch(self, request: Request) -> Response:
        user = request.user
        serializer = self.get_serializer(user, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.update_account(
            user, display_name=data.get("display_name"), password=data.get("password"),
            actor=Actor.of(request))
        return Response(self.get_serializer(self.account()).data)


# --- app passwords ---------------------------------------------------------------


class AppPasswordViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    mixins.DestroyModelMixin, viewsets.GenericViewSet,
):
    """App passwords for mail programs: your mailbox's, and for administrators
    those of the mailboxes they manage. The password is shown once, on creation."""

    serializer_class = serializers.AppPasswordSerializer
    permission_classes = [IsAuthenticated]
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["created", "name", "last_used"]
    ordering = ["-created", "-id"]

    def get_queryset(self) -> QuerySet[AppPassword]:
        return AppPassword.objects.filter(
            mailbox__in=access.mailboxes_for(self.request.user)).select_related("mailbox")

    @extend_schema(responses={201: serializers.NewAppPasswordSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        address = data.get("mailbox", {}).get("address")
        mailboxes = access.mailboxes_for(request.user)
        mailbox = (mailboxes.filter(address=address.strip().lower()).first()
                   if address is not None else getattr(request.user, "mailbox", None))
        if mailbox is None:
            raise NotFound(f"no mailbox {address or 'of yours'} that you manage", field="mailbox")
        made, secret = app_passwords.create(mailbox, data["name"], actor=Actor.of(request))
        made.password = secret  # type: ignore[attr-defined]
        return Response(serializers.NewAppPasswordSerializer(made).data,
                        status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: AppPassword) -> None:
        app_passwords.revoke(instance, actor=Actor.of(self.request))


# --- tokens ----------------------------------------------------------------------


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    mixins.DestroyModelMixin, viewsets.GenericViewSet,
):
    """API tokens: yours, and for administrators those of the accounts they manage."""

    serializer_class = serializers.ApiTokenSerializer
    permission_classes = [IsAuthenticated]
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["created", "name"]
    ordering = ["-created", "-id"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        return access.tokens_for(self.request.user).select_related("user")

    @extend_schema(responses={201: serializers.NewApiTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        login = data.get("user", {}).get("email")
        account = request.user
        if login is not None:
            found = access.accounts_for(request.user).filter(email=login.strip().lower()).first()
            if found is None:
                raise NotFound(f"no account {login} that you manage", field="account")
            account = found
        token, key = token_services.create_token(account, name=data.get("name", ""))
        token.key = key  # type: ignore[attr-defined]
        return Response(serializers.NewApiTokenSerializer(token).data,
                        status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiToken) -> None:
        token_services.revoke_token(instance)

