"""The user's sign-in security: app passwords (one per mail program, made
here, shown once, revocable; and the choice that mail programs must use them),
through apps/directory/app_passwords.py as the API's; and two-factor sign-in
to the webmail, the same steps as the admin panel's."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from apps.directory import app_passwords
from apps.directory import services as directory
from apps.directory.audit import Actor
from apps.directory.models import AppPassword, Mailbox
from apps.web.auth import mailbox_required, mailbox_setting_up_second_factor, second_factor_missing
from apps.web.second_factor_page import second_factor_page
from mailhost.errors import MailhostError

# The secret of the password just made, kept in the session until the page
# that shows it (once) is drawn.
_JUST_MADE = "webmail_new_app_password"


class NewAppPasswordForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=AppPassword._meta.get_field("name").max_length,
        help_text="The program or device it is for, such as “Phone” or “Thunderbird at work”.")


@require_http_methods(["GET", "POST"])
@mailbox_required
def app_passwords_page(request: HttpRequest) -> HttpResponse:
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    form = NewAppPasswordForm(request.POST if request.POST.get("action") == "create" else None)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create" and form.is_valid():
            try:
                made, secret = app_passwords.create(mailbox, form.cleaned_data["name"],
                                                    actor=Actor.of(request))
            except MailhostError as error:
                form.add_error("name", error.message)
            else:
                request.session[_JUST_MADE] = {"id": made.pk, "secret": secret}
                return redirect("webmail:app_passwords")
        elif action == "revoke":
            revoked = get_object_or_404(mailbox.app_passwords, pk=request.POST.get("id"))
            app_passwords.revoke(revoked, actor=Actor.of(request))
            messages.success(request, f"“{revoked.name}” revoked: it no longer signs in.")
            return redirect("webmail:app_passwords")
        elif action == "require":
            directory.update_mailbox(mailbox, password_web_only=bool(request.POST.get("required")),
                                     actor=Actor.of(request))
            messages.success(request, "Saved.")
            return redirect("webmail:app_passwords")
    just_made = request.session.pop(_JUST_MADE, None)
    return render(request, "webmail/app_passwords.html", {
        "form": form,
        "app_passwords": list(mailbox.app_passwords.all()),
        "just_made": just_made,
        "required_by_domain": mailbox.domain.app_passwords_required,
        "required": app_passwords.required(mailbox),
    }, status=400 if form.errors else 200)


@sensitive_post_parameters("code")
@mailbox_setting_up_second_factor
def two_step(request: HttpRequest) -> HttpResponse:
    """The user's two-factor sign-in (TOTP): optional, or required by the
    domain (then every webmail page leads here until it is set up, and it
    cannot be turned off)."""
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    required = mailbox.domain.second_factor_required
    return second_factor_page(request, template="webmail/two_step.html",
                              page_url=reverse("webmail:two_step"), may_turn_off=not required,
                              context={"required_by_domain": required,
                                       "missing": second_factor_missing(request.user)})
