"""The audit log page and the administrator's own two-factor settings."""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters

from apps.directory import second_factor
from apps.directory.access import audit_entries_for
from apps.directory.audit import Actor
from apps.directory.models import SecondFactor
from apps.web.auth import admin_required
from apps.web.forms import CodeForm
from apps.webadmin.directory_forms import AuditFilterForm, show_error
from apps.webadmin.paging import paginate
from mailhost.errors import MailhostError


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
    """Two-factor sign-in for the signed-in administrator: set up (QR code,
    then a first code), recovery codes shown once, turn off with a code."""
    user = request.user
    factor = SecondFactor.objects.filter(user=user).first()
    form = CodeForm(request.POST or None)
    recovery_codes = None
    action = request.POST.get("action")
    if request.method == "POST":
        try:
            if action == "begin":
                factor = second_factor.begin_enrolment(user)
                form = CodeForm()
            elif action == "confirm" and form.is_valid():
                recovery_codes = second_factor.confirm_enrolment(
                    user, form.cleaned_data["code"], actor=Actor.of(request))
                factor = SecondFactor.objects.get(user=user)
                form = CodeForm()
            elif action == "disable" and form.is_valid():
                second_factor.disable(user, form.cleaned_data["code"], actor=Actor.of(request))
                messages.success(request, "Two-factor sign-in is off.")
                return redirect("webadmin:security")
        except MailhostError as error:
            show_error(form, error)
    qr = None
    if factor is not None and not factor.confirmed:
        qr = second_factor.qr_code(factor)
        form.fields["code"].help_text = "The 6-digit code your authenticator app shows now."
    return render(request, "webadmin/directory/security.html", {
        "section": "security", "factor": factor, "form": form, "qr": qr,
        "recovery_codes": recovery_codes}, status=400 if form.errors else 200)
