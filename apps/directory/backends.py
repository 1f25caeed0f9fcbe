"""Django authentication backend: web logins go through the same rules
(lockout, disabled mailboxes) as IMAP, POP3 and SMTP."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from apps.directory import services
from apps.directory.models import User
from mailhost import metrics


class MailhostBackend(ModelBackend):
    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, username: str | None = None,
        password: str | None = None, **kwargs: object,
    ) -> User | None:
        if not username or password is None:
            return None
        remote_ip = request.META.get("REMOTE_ADDR") if request else None
        login = username.strip().lower()
        user = User.objects.filter(email=login).first()
        if user is not None and hasattr(user, "mailbox"):
            mailbox = services.authenticate(login, password, remote_ip=remote_ip, protocol="web")
            return mailbox.user if mailbox else None
        # Administrators without a mailbox, and unknown logins: same lockout,
        # and the hasher runs whether or not the account exists or is active.
        if services.is_locked_out(login, remote_ip):
            metrics.AUTH_FAILURES.labels("web", "locked_out").inc()
            return None
        if services.password_matches(login, password, user) and user.is_active:
            return user
        services.record_failure(login, remote_ip)
        metrics.AUTH_FAILURES.labels("web", "password").inc()
        return None

    def get_user(self, user_id: object) -> User | None:
        """The signed-in person of a web request, with their mailbox and its
        domain in the same query: every webmail page needs the mailbox, and
        the domain's two-factor policy (apps/web/auth.py) without a query."""
        user = (User._default_manager.select_related("mailbox__domain")
                .filter(pk=user_id).first())
        return user if user is not None and self.user_can_authenticate(user) else None
