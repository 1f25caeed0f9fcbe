"""URLAUTH-authorized IMAP URLs (RFC 4467, RFC 5092): pure functions over bytes.

An authorized URL is an absolute IMAP message URL, optionally ";EXPIRE=", then
";URLAUTH=<access>" (the rump, what the token signs) and, once authorized,
":<mechanism>:<token>". Who may fetch it is in <access> (RFC 4467 §2.1):
"anonymous", "authuser", "user+<userid>", "submit+<userid>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from apps.imap.parser import ImapUrl, parse_imap_url

MECHANISM = "INTERNAL"  # RFC 4467 §7: the one mechanism every server has

_AUTH_URL = re.compile(
    rb"(?P<rump>imap://(?P<user>[^@/;]+)(?:;AUTH=[^@/]*)?@(?P<host>[^/]+)"
    rb"(?P<path>/.*?)(?:;EXPIRE=(?P<expire>[^;]+))?"
    rb";URLAUTH=(?P<access>anonymous|authuser|(?:user|submit)\+[^:;/]+))"
    rb"(?::(?P<mechanism>[A-Za-z0-9-]+):(?P<token>[0-9A-Fa-f]{32,}))?", re.IGNORECASE)


@dataclass(frozen=True)
class AuthUrl:
    rump: bytes  # what the token signs: up to and including ;URLAUTH=<access>
    message: ImapUrl
    owner: str  # the login of the mailbox the URL is in
    expire: datetime | None
    access: str  # anonymous, authuser, user, submit
    access_user: str | None
    mechanism: str | None
    token: str | None

    def allows(self, login: str) -> bool:
        """RFC 4467 §2.1: whether the signed-in ``login`` may fetch the URL.
        Mailhost's URLFETCH serves IMAP users only, never a submission server
        acting for one, so "submit+" URLs are for nobody here."""
        if self.access in ("anonymous", "authuser"):
            return True
        return self.access == "user" and (self.access_user or "").lower() == login.lower()

    def expired(self, now: datetime) -> bool:
        return self.expire is not None and now >= self.expire


def _login(user: str, host: str) -> str:
    # An enc-user without a domain lives on the URL's host (user@host).
    user = unquote(user)
    return user if "@" in user else f"{user}@{host}"


def parse_auth_url(raw: bytes) -> AuthUrl:
    """An authorized (or rump) URL, or ValueError."""
    match = _AUTH_URL.fullmatch(raw)
    if match is None:
        raise ValueError("not a URLAUTH URL")
    host = match["host"].decode("ascii", "replace").split(":")[0].lower()
    message = parse_imap_url(match["path"])
    expire = None
    if match["expire"] is not None:
        try:
            expire = datetime.fromisoformat(unquote(match["expire"].decode("ascii")))
        except ValueError:
            raise ValueError("bad EXPIRE date-time") from None
        if expire.tzinfo is None:
            raise ValueError("EXPIRE needs a time zone")  # RFC 3339 date-time
    access, _, who = match["access"].decode("ascii", "replace").partition("+")
    return AuthUrl(
        rump=match["rump"], message=message,
        owner=_login(match["user"].decode("utf-8", "replace"), host),
        expire=expire, access=access.lower(),
        access_user=_login(who, host) if who else None,
        mechanism=match["mechanism"].decode().upper() if match["mechanism"] else None,
        token=match["token"].decode().lower() if match["token"] else None)
