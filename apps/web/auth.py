"""Who may open which part of the web side. Every view of the admin panel and
the webmail is wrapped in one of these; what an administrator may *see* inside
the panel is then decided by apps/directory/access.py."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.directory import second_factor
from apps.directory.access import is_admin

View = Callable[..., HttpResponse]


def _requiring(allowed: Callable[[Any], bool]) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not allowed(request.user):
                # As the API answers: what is outside one's rights does not exist.
                raise Http404
            return view(request, *args, **kwargs)
        return wrapped
    return decorator


def has_mailbox(user: Any) -> bool:
    return hasattr(user, "mailbox")


def second_factor_missing(user: Any) -> bool:
    """A mailbox user whose domain requires two-factor sign-in and who has
    set up neither an authenticator app nor a security key. The mailbox and
    its domain come with the signed-in user (MailhostBackend.get_user), so
    only a domain that requires it costs a query."""
    mailbox = getattr(user, "mailbox", None)
    if mailbox is None or not mailbox.domain.second_factor_required:
        return False
    return not second_factor.is_enrolled(user)


admin_required = _requiring(is_admin)
# The page where a mailbox user sets up a second factor: open before it is set up.
mailbox_setting_up_second_factor = _requiring(has_mailbox)


def mailbox_required(view: View) -> View:
    """A webmail page: for a mailbox user, and once the domain's policy on
    two-factor sign-in is met (until then, every page leads to setting it up)."""
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if second_factor_missing(request.user):
            return redirect("webmail:two_step")
        return view(request, *args, **kwargs)
    return mailbox_setting_up_second_factor(wrapped)
