"""The user's own settings (issue 11 item 8): password, display name and
signature, identities, forwarding, vacation auto-reply, spam threshold. One
page, one form per section; each change goes through its service.
Forwarding and the auto-reply are Sieve (apps/delivery/rules.py): the page
shows the active script and says what saving does to one the user wrote."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import getaddresses
from typing import cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters

from apps.delivery import rules
from apps.delivery.vacation import set_vacation, vacation_of
from apps.directory import services as directory
from apps.directory.audit import Actor
from apps.directory.clientconfig import client_settings
from apps.directory.models import Mailbox
from apps.sieve import services as sieve
from apps.web import autoconfig
from apps.web.auth import mailbox_required
from apps.webmail import writing
from apps.webmail.forms_settings import (
    ForwardingForm,
    IdentitiesForm,
    PasswordForm,
    ProfileForm,
    SpamForm,
    VacationForm,
)
from apps.webmail.models import WritingSettings
from mailhost.errors import MailhostError

Saver = Callable[[HttpRequest, Mailbox, forms.Form], str]


def _save_password(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    directory.change_own_password(
        mailbox, old=form.cleaned_data["old_password"], new=form.cleaned_data["new_password"],
        remote_ip=request.META.get("REMOTE_ADDR"), protocol="web")
    update_session_auth_hash(request, mailbox.user)  # this session stays signed in
    return "Password changed."


def _save_profile(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    with transaction.atomic():
        directory.update_account(mailbox.user, display_name=form.cleaned_data["display_name"],
                                 actor=Actor.of(request))
        WritingSettings.objects.update_or_create(
            mailbox=mailbox, defaults={"signature": form.cleaned_data["signature"]})
    return "Name and signature saved."


def _save_identities(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    WritingSettings.objects.update_or_create(
        mailbox=mailbox, defaults={"identities": cast(IdentitiesForm, form).identities()})
    return "Identities saved."


def _save_forwarding(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    targets = [address for _, address in getaddresses(form.cleaned_data["forward_to"])]
    rules.set_forwarding(mailbox, addresses=targets,
                         keep_copy=form.cleaned_data["forward_keep_copy"],
                         actor=Actor.of(request))
    return "Forwarding saved." if targets else "Forwarding is off."


def _save_vacation(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    vacation = set_vacation(mailbox, **form.cleaned_data)
    return "Automatic reply on." if vacation.enabled else "Automatic reply off."


def _save_spam(request: HttpRequest, mailbox: Mailbox, form: forms.Form) -> str:
    directory.update_mailbox(mailbox, spam_threshold=form.cleaned_data["spam_threshold"],
                             actor=Actor.of(request))
    return "Spam threshold saved."


def _forms(mailbox: Mailbox, bound: str | None, data: dict | None) -> dict[str, forms.Form]:
    user = mailbox.user
    writing_settings = writing.settings_of(mailbox)
    vacation = vacation_of(mailbox)
    forwarding = rules.forwarding_of(mailbox)

    def bind(name: str) -> dict | None:
        return data if name == bound else None

    return {
        "profile": ProfileForm(bind("profile"), prefix="profile", initial={
            "display_name": user.display_name, "signature": writing_settings.signature}),
        "identities": IdentitiesForm(
            bind("identities"), prefix="identities", addresses=directory.own_addresses(mailbox),
            chosen={i["address"]: i.get("name", "") for i in writing_settings.identities},
            default_name=user.display_name),
        "password": PasswordForm(bind("password"), prefix="password"),
        "forwarding": ForwardingForm(bind("forwarding"), prefix="forwarding", initial={
            "forward_to": ", ".join(forwarding.addresses),
            "forward_keep_copy": forwarding.keep_copy}),
        "vacation": VacationForm(bind("vacation"), prefix="vacation", initial={
            "enabled": vacation.enabled, "subject": vacation.subject, "body": vacation.body,
            "start": vacation.start, "end": vacation.end}),
        "spam": SpamForm(bind("spam"), prefix="spam",
                         initial={"spam_threshold": mailbox.spam_threshold}),
    }


SAVERS: dict[str, Saver] = {
    "profile": _save_profile, "identities": _save_identities, "password": _save_password,
    "forwarding": _save_forwarding, "vacation": _save_vacation, "spam": _save_spam,
}


@sensitive_post_parameters("password-old_password", "password-new_password",
                           "password-repeat_password")
@mailbox_required
def settings_page(request: HttpRequest) -> HttpResponse:
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    section = request.POST.get("section") if request.method == "POST" else None
    if section is not None and section not in SAVERS:
        section = None
    all_forms = _forms(mailbox, section, request.POST if section else None)
    status = 200
    if section is not None:
        form = all_forms[section]
        if form.is_valid():
            try:
                messages.success(request, SAVERS[section](request, mailbox, form))
                return redirect("webmail:settings")
            except MailhostError as error:
                # The services name their own fields; the password form calls it "new".
                field = {"password": "new_password"}.get(str(error.context.get("field")),
                                                         error.context.get("field"))
                form.add_error(field if field in form.fields else None, error.message)
        status = 400
    return render(request, "webmail/settings.html", {
        "forms": all_forms, "site_spam_threshold": settings.MAILHOST_SPAM_THRESHOLD,
        "interval_days": settings.MAILHOST_VACATION_INTERVAL_DAYS,
        "client": client_settings(mailbox.address),
        # Sieve filters are managed over ManageSieve; the page says which
        # runs and what saving forwarding or the auto-reply does to it.
        "sieve_scripts": sieve.list_scripts(mailbox), "rules": rules.rules_state(mailbox),
        "generated_name": rules.GENERATED_NAME,
        "directory_forwarding": bool(mailbox.forward_to),
        "sieve_host": settings.MAILHOST_PUBLIC_HOSTNAME,
        "sieve_port": settings.MAILHOST_PUBLIC_PORTS["managesieve"]}, status=status)


@mailbox_required
def mobileconfig(request: HttpRequest) -> HttpResponse:
    """The signed-in user's account as an Apple configuration profile, for
    iPhone, iPad and macOS Mail (the password is asked for on installing)."""
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    client = client_settings(mailbox.address)
    if client is None:  # the domain was disabled meanwhile
        raise Http404
    response = HttpResponse(autoconfig.mobileconfig(client),
                            content_type=autoconfig.MOBILECONFIG_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{client.domain}.mobileconfig"'
    return response
