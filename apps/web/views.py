"""One sign-in page for every person; administrators land on the panel,
mailbox users on the webmail."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from apps.directory import second_factor, security_keys, services
from apps.directory.access import is_admin
from apps.directory.audit import Actor
from apps.directory.models import User
from apps.web.forms import CodeForm, SignInForm
from apps.web.second_factor_page import relying_party_of

# Lockout, unknown login, wrong password and a disabled account all read the
# same, so the page never tells whether a login exists.
SIGN_IN_FAILED = "The email or password is not right, or sign-in is paused for a while."
CODE_FAILED = "That code is not right, or sign-in is paused for a while."
KEY_FAILED = "That key was not accepted, or sign-in is paused for a while."
# Between the password and the code: whose password was right, for how long.
PENDING_KEY = "sign_in_pending"
PENDING_SECONDS = 300


def home_for(user: object) -> str:
    if is_admin(user):  # type: ignore[arg-type]
        return reverse("webadmin:dashboard")
    return reverse("webmail:index")


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return None


@never_cache
def landing(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect(settings.LOGIN_URL)
    return redirect(home_for(request.user))


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def sign_in(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request) or home_for(request.user))
    form = SignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = authenticate(request, username=form.cleaned_data["email"],
                            password=form.cleaned_data["password"])
        if user is None:
            form.add_error(None, SIGN_IN_FAILED)
        elif second_factor.is_enrolled(user):
            # The password was right; the session is signed in only after the code.
            request.session[PENDING_KEY] = {
                "user": user.pk, "next": _safe_next(request) or "", "at": time.time()}
            return redirect("web:sign_in_code")
        else:
            login(request, user)
            return HttpResponseRedirect(_safe_next(request) or home_for(user))
    return render(request, "web/sign_in.html", {
        "form": form, "next": _safe_next(request) or ""}, status=400 if form.errors else 200)


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
def sign_in_code(request: HttpRequest) -> HttpResponse:
    """The second step for anyone with a second factor: a security key, a
    TOTP code or a recovery code, whichever the person has. Wrong answers
    count toward the same lockout as wrong passwords."""
    pending = request.session.get(PENDING_KEY)
    user = None
    if pending and time.time() - pending["at"] < PENDING_SECONDS:
        user = User.objects.filter(pk=pending["user"], is_active=True).first()
    if user is None:
        request.session.pop(PENDING_KEY, None)
        return redirect(settings.LOGIN_URL)
    rp = relying_party_of(request)
    with_key = request.method == "POST" and request.POST.get("action") == "key"
    form = CodeForm(request.POST if request.method == "POST" and not with_key else None)
    key_error = None
    if request.method == "POST" and (with_key or form.is_valid()):
        remote_ip = request.META.get("REMOTE_ADDR")
        if services.is_locked_out(user.email, remote_ip):
            accepted = False
        elif with_key:
            accepted = security_keys.verify(user, request.POST.get("credential", ""), rp=rp,
                                            challenges=request.session)
        else:
            accepted = second_factor.verify(user, form.cleaned_data["code"],
                                            actor=Actor(user, remote_ip))
        if accepted:
            del request.session[PENDING_KEY]
            login(request, user)
            return HttpResponseRedirect(pending["next"] or home_for(user))
        services.record_failure(user.email, remote_ip)
        if with_key:
            key_error = KEY_FAILED
        else:
            form.add_error("code", CODE_FAILED)
    has_keys = user.security_keys.exists()
    return render(request, "web/sign_in_code.html", {
        "form": form, "has_totp": second_factor.has_totp(user), "key_error": key_error,
        "authentication_options": security_keys.authentication_options(
            user, rp=rp, challenges=request.session) if has_keys else None,
    }, status=400 if form.errors or key_error else 200)


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect(settings.LOGIN_URL)

