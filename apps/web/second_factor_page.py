"""One's own two-factor sign-in settings (TOTP, RFC 6238): set up with a QR code
and a first code, recovery codes shown once, turned off with a code. The admin
panel (administrators) and the webmail (mailbox users) draw the same steps
inside their own layouts."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.directory import second_factor
from apps.directory.audit import Actor
from apps.directory.models import SecondFactor
from apps.web.forms import CodeForm
from mailhost.errors import MailhostError


def second_factor_page(request: HttpRequest, *, template: str, page_url: str,
                       may_turn_off: bool = True, context: dict[str, Any] | None = None,
                       ) -> HttpResponse:
    """Handle the page's three steps for the signed-in user and draw
    ``template``, which includes ``web/_second_factor.html``."""
    user = request.user
    factor = SecondFactor.objects.filter(user=user).first()
    form = CodeForm(request.POST or None)
    recovery_codes = None
    action = request.POST.get("action")
    if request.method == "POST":
        try:
            if action == "begin":
                factor = second_factor.begin_enrolment(user)  # type: ignore[arg-type]
                form = CodeForm()
            elif action == "confirm" and form.is_valid():
                recovery_codes = second_factor.confirm_enrolment(
                    user, form.cleaned_data["code"], actor=Actor.of(request))  # type: ignore[arg-type]
                factor = SecondFactor.objects.get(user=user)
                form = CodeForm()
            elif action == "disable" and may_turn_off and form.is_valid():
                second_factor.disable(user, form.cleaned_data["code"],  # type: ignore[arg-type]
                                      actor=Actor.of(request))
                messages.success(request, "Two-factor sign-in is off.")
                return redirect(page_url)
        except MailhostError as error:
            field = error.context.get("field")
            form.add_error(field if field in form.fields else None, error.message)
    qr = None
    if factor is not None and not factor.confirmed:
        qr = second_factor.qr_code(factor)
        form.fields["code"].help_text = "The 6-digit code your authenticator app shows now."
    return render(request, template, {
        "factor": factor, "form": form, "qr": qr, "recovery_codes": recovery_codes,
        "page_url": page_url, "may_turn_off": may_turn_off, **(context or {}),
    }, status=400 if form.errors else 200)
