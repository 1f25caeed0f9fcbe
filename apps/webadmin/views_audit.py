"""The audit log page and the administrator's own two-factor settings."""

from __future__ import annotations

from datetime import datetime, time

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters

from apps.directory.access import audit_entries_for
from apps.web.auth import admin_required
from apps.web.second_factor_page import second_factor_page
from apps.webadmin.directory_forms import AuditFilterForm
from apps.webadmin.paging import paginate


@admin_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    entries = audit_entries_for(request.user)
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            entries = entries.filter(actor_email__contains=data["actor"].strip().lower())
        if data["object"]:
            entries = entries.filter(object_repr__contains=data["object"].strip().lower())
        zone = timezone.get_current_timezone()
        if data["since"]:
            entries = entries.filter(when__gte=datetime.combine(data["since"], time.min, zone))
        if data["until"]:
            entries = entries.filter(when__lte=datetime.combine(data["until"], time.max, zone))
    page = paginate(request, entries)
    return render(request, "webadmin/directory/audit_log.html", {
        "section": "audit", "form": form, "page": page})


@sensitive_post_parameters("code")
@admin_required
def security(request: HttpRequest) -> HttpResponse:
    """Two-factor sign-in for the signed-in administrator."""
    return second_factor_page(request, template="webadmin/directory/security.html",
                              page_url=reverse("webadmin:security"),
                              context={"section": "security"})
