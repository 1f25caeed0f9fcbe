"""Domains in the admin panel: list, create, settings, disable, delete, and the
DNS page. Every domain is looked up through apps/directory/access.py (another
admin's domain is not found); only a superadmin changes domains, as in the API."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.directory import dnspublish, services
from apps.directory.access import aliases_for, domains_for, is_superadmin
from apps.directory.audit import Actor
from apps.directory.dkim_rotation import state
from apps.directory.dns import dns_records, zone_lines
from apps.directory.dns_check import check_records
from apps.directory.models import Domain
from apps.store.models import Folder
from apps.store.services import with_domain_usage
from apps.web.auth import admin_required
from apps.webadmin.directory_forms import (
    DnsTargetForm,
    DomainCreateForm,
    DomainEditForm,
    show_error,
)
from apps.webadmin.paging import paginate, search_text
from mailhost.errors import MailhostError


def _domain(request: HttpRequest, pk: int) -> Domain:
    return get_object_or_404(domains_for(request.user), pk=pk)


def _superadmin_only(request: HttpRequest) -> None:
    if not is_superadmin(request.user):
        raise Http404


@admin_required
def domain_list(request: HttpRequest) -> HttpResponse:
    query = search_text(request, "q")
    domains = domains_for(request.user)
    if query:
        domains = domains.filter(name__contains=query)
    page = paginate(request, domains, rows=with_domain_usage)
    return render(request, "webadmin/directory/domain_list.html", {
        "section": "domains", "page": page, "q": query,
        "may_create": is_superadmin(request.user)})


@admin_required
def domain_create(request: HttpRequest) -> HttpResponse:
    _superadmin_only(request)
    form = DomainCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            domain = services.create_domain(
                data["name"], default_quota=data["default_quota"],
                max_mailboxes=data["max_mailboxes"], actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Domain {domain.name} created. Publish its DNS records "
                                      "next.")
            return redirect("webadmin:domain_dns", pk=domain.pk)
    return render(request, "webadmin/directory/domain_create.html", {
        "section": "domains", "form": form}, status=400 if form.errors else 200)


@admin_required
def domain_detail(request: HttpRequest, pk: int) -> HttpResponse:
    domain = get_object_or_404(with_domain_usage(domains_for(request.user)), pk=pk)
    form = None
    if is_superadmin(request.user):
        form = DomainEditForm(request.POST or None, initial={
            "default_quota": domain.default_quota, "max_mailboxes": domain.max_mailboxes,
            "greylisting": domain.greylisting, "spam_threshold": domain.spam_threshold,
            "app_passwords_required": domain.app_passwords_required,
            "second_factor_required": domain.second_factor_required, "active": domain.active})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.update_domain(
                    domain, default_quota=data["default_quota"],
                    max_mailboxes=data["max_mailboxes"], greylisting=data["greylisting"],
                    spam_threshold=data["spam_threshold"], active=data["active"],
                    app_passwords_required=data["app_passwords_required"],
                    second_factor_required=data["second_factor_required"],
                    actor=Actor.of(request))
            except MailhostError as error:
                show_error(form, error)
            else:
                messages.success(request, f"Settings of {domain.name} saved.")
                return redirect("webadmin:domain_detail", pk=domain.pk)
    elif request.method == "POST":
        raise Http404
    return render(request, "webadmin/directory/domain_detail.html", {
        "section": "domains", "domain": domain, "form": form,
        "alias_count": aliases_for(request.user).filter(domain=domain).count(),
    }, status=400 if form is not None and form.errors else 200)


@admin_required
@require_POST
def domain_set_active(request: HttpRequest, pk: int) -> HttpResponse:
    _superadmin_only(request)
    domain = _domain(request, pk)
    active = request.POST.get("active") == "1"
    services.update_domain(domain, active=active, actor=Actor.of(request))
    messages.success(request, f"Domain {domain.name} {'enabled' if active else 'disabled'}.")
    return redirect("webadmin:domain_detail", pk=domain.pk)


def removal_summary(domain: Domain) -> dict[str, int]:
    """What deleting ``domain`` removes, for its confirmation page."""
    stored = Folder.objects.filter(mailbox__domain=domain).aggregate(
        messages=Sum("message_count", default=0), bytes=Sum("total_size", default=0))
    counts = Domain.objects.filter(pk=domain.pk).aggregate(
        mailboxes=Count("mailboxes", distinct=True), aliases=Count("aliases", distinct=True))
    return {**counts, **stored}


@admin_required
def domain_delete(request: HttpRequest, pk: int) -> HttpResponse:
    _superadmin_only(request)
    domain = _domain(request, pk)
    if request.method == "POST":
        services.delete_domain(domain, with_mailboxes=True, actor=Actor.of(request))
        messages.success(request, f"Domain {domain.name} deleted.")
        return redirect("webadmin:domain_list")
    return render(request, "webadmin/directory/domain_delete.html", {
        "section": "domains", "domain": domain, "summary": removal_summary(domain)})


@admin_required
def domain_dns(request: HttpRequest, pk: int, target_form: DnsTargetForm | None = None,
               ) -> HttpResponse:
    """The records to publish, each checked; with an update target, the
    changes an update would make and the drift; a superadmin's target form."""
    domain = _domain(request, pk)
    records = dns_records(domain, mail_host=settings.MAILHOST_HOSTNAME)
    target = dnspublish.target_of(domain)
    update_plan, publish_error = None, ""
    if target is not None:
        try:
            update_plan = dnspublish.plan(domain)
        except MailhostError as error:
            publish_error = error.message
    if target_form is None and is_superadmin(request.user):
        target_form = DnsTargetForm(initial={
            "server": target.server, "port": target.port, "zone": target.zone,
            "key_name": target.key_name, "algorithm": target.algorithm,
        } if target else None)
    keys = [(key, state(key)) for key in domain.dkim_keys.filter(active=True)
            .order_by("created", "pk")]
    return render(request, "webadmin/directory/domain_dns.html", {
        "section": "domains", "domain": domain, "checks": check_records(records),
        "zone": "\n".join(zone_lines(records)), "target": target, "plan": update_plan,
        "publish_error": publish_error, "target_form": target_form, "keys": keys,
        "rotate_days": settings.MAILHOST_DKIM_ROTATE_DAYS,
        "grace_days": settings.MAILHOST_DKIM_GRACE_DAYS,
    }, status=400 if target_form is not None and target_form.errors else 200)


@admin_required
@require_POST
def domain_dns_target(request: HttpRequest, pk: int) -> HttpResponse:
    """Set or remove the domain's update target (superadmins)."""
    _superadmin_only(request)
    domain = _domain(request, pk)
    if "remove" in request.POST:
        dnspublish.remove_target(domain, actor=Actor.of(request))
        messages.success(request, "Records are no longer published from here.")
        return redirect("webadmin:domain_dns", pk=domain.pk)
    form = DnsTargetForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            dnspublish.set_target(
                domain, server=data["server"], port=data["port"], zone=data["zone"],
                key_name=data["key_name"], algorithm=data["algorithm"],
                secret=data["secret"] or None, actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, "Update target saved.")
            return redirect("webadmin:domain_dns", pk=domain.pk)
    return domain_dns(request, pk, target_form=form)


@admin_required
@require_POST
def domain_dns_publish(request: HttpRequest, pk: int) -> HttpResponse:
    """Apply the update the DNS page showed (superadmins)."""
    _superadmin_only(request)
    domain = _domain(request, pk)
    try:
        applied = dnspublish.apply(domain, actor=Actor.of(request))
    except MailhostError as error:
        messages.error(request, f"Nothing was published: {error.message}")
    else:
        messages.success(request, f"{len(applied.changes)} changes published."
                         if applied.changes else "The zone was up to date.")
    return redirect("webadmin:domain_dns", pk=domain.pk)
