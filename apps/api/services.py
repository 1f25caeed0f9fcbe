"""API token services: the only place tokens are made, checked and revoked."""

from __future__ import annotations

import hashlib
import secrets

from apps.api.models import ApiToken
from apps.directory.models import User
from mailhost.errors import Invalid

KEY_PREFIX = "mh_"


def _digest(key: str) -> str:
    # The key is 256 random bits: a plain digest cannot be reversed or guessed,
    # and unlike a password hash it can be looked up by equality.
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(user: User, *, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``, and its key (not stored: show it once)."""
    name = name.strip()
    if len(name) > ApiToken._meta.get_field("name").max_length:  # type: ignore[operator]
        raise Invalid("token name too long", field="name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, key_digest=_digest(key), prefix=key[:10]
    )
    return token, key


def revoke_token(token: ApiToken) -> None:
    token.delete()


def token_for_key(key: str) -> ApiToken | None:
    """The token of ``key`` if its account may sign in now: active, and for a
    mailbox user, with the mailbox and its domain enabled (as for IMAP/SMTP)."""
    token = (
        ApiToken.objects.select_related("user__mailbox__domain")
        .filter(key_digest=_digest(key)).first()
    )
    if token is None or not token.user.is_active:
        return None
    mailbox = getattr(token.user, "mailbox", None)
    if mailbox is not None and not (mailbox.active and mailbox.domain.active):
        return None
    return token
