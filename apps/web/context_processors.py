from __future__ import annotations

from django.http import HttpRequest

from apps.directory.access import is_admin
from apps.web.auth import has_mailbox


def navigation(request: HttpRequest) -> dict[str, object]:
    """Which parts of the web side the signed-in person may open."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_admin": is_admin(user), "nav_mail": has_mailbox(user)}
