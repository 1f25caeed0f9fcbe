"""One's own two-factor sign-in settings: an authenticator app (TOTP, RFC 6238)
set up with a QR code and a first code, recovery codes shown once, turned off
with a code; and security keys (WebAuthn), added by name and removed. The
admin panel (administrators) and the webmail (mailbox users) draw the same
steps inside their own layouts."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from apps.directory import second_factor, security_keys
from apps.directory.audit import Actor
from apps.directory.models import SecondFactor
from apps.web.forms import CodeForm, SecurityKeyForm
from mailhost.errors import MailhostError


def relying_party_of(request: HttpRequest) -> security_keys.RelyingParty:
    """The WebAuthn relying party for the page this request asked for."""
    return security_keys.relying_party(scheme=request.scheme, host=request.get_host())


def second_factor_page(request: HttpRequest, *, template: str, page_url: str,
                       may_turn_off: bool = True, context: dict[str, Any] | None = None,
                       ) -> HttpResponse:
    """Handle the page's steps for the signed-in user and draw ``template``,
    which includes ``web/_second_factor.html``. ``may_turn_off``: whether the
    person may be left without a second factor."""
    user = request.user
    factor = SecondFactor.objects.filter(user=user).first()
    keys = list(user.security_keys.all())  # type: ignore[union-attr]
    # With a security key left, the authenticator app may go whatever the policy.
    may_turn_off = may_turn_off or bool(keys)
    action = request.POST.get("action")
    form = CodeForm(request.POST if action in ("confirm", "disable") else None)
    key_form = SecurityKeyForm(request.POST if action == "key-add" else None)
    recovery_codes = None
    rp = relying_party_of(request)
    if request.method == "POST":
        try:
            if action == "key-add" and key_form.is_valid():
                added = security_keys.register(
                    user, key_form.cleaned_data["credential"],  # type: ignore[arg-type]
                    name=key_form.cleaned_data["name"], rp=rp, challenges=request.session,
                    actor=Actor.of(request))
                messages.success(request, f"Security key “{added.name}” added.")
                return redirect(page_url)
            elif action == "key-remove":
                removed = get_object_or_404(user.security_keys,  # type: ignore[union-attr]
                                            pk=request.POST.get("id"))
                security_keys.remove(removed, actor=Actor.of(request))
                messages.success(request, f"Security key “{removed.name}” removed.")
                return redirect(page_url)
            elif action == "begin":
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
                messages.success(request, "Two-factor sign-in with the authenticator app is off.")
                return redirect(page_url)
        except MailhostError as error:
            shown = key_form if action and action.startswith("key-") else form
            field = error.context.get("field")
            shown.add_error(field if field in shown.fields else None, error.message)
    qr = None
    if factor is not None and not factor.confirmed:
        qr = second_factor.qr_code(factor)
        form.fields["code"].help_text = "The 6-digit code your authenticator app shows now."
    return render(request, template, {
        "factor": factor, "form": form, "qr": qr, "recovery_codes": recovery_codes,
        "page_url": page_url, "may_turn_off": may_turn_off,
        "security_keys": keys, "key_form": key_form,
        "registration_options": security_keys.registration_options(
            user, rp=rp, challenges=request.session),  # type: ignore[arg-type]
        **(context or {}),
    }, status=400 if form.errors or key_form.errors else 200)
