"""Who may open which part of the web side. Every view of the admin panel and
the webmail is wrapped in one of these; what an administrator may *see* inside
the panel is then decided by apps/directory/access.py."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse

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


admin_required = _requiring(is_admin)
mailbox_required = _requiring(has_mailbox)
