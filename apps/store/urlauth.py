"""URLAUTH (RFC 4467): mailbox access keys and the tokens made with them.

Each folder has its own random key, made when a URL of it is first signed.
The INTERNAL mechanism's token is an HMAC-SHA256 of the URL's rump (RFC 4467
§2.3) under that key, in hex: a URL works until RESETKEY replaces the key or
the folder goes (the key goes with it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from apps.directory.models import Mailbox
from apps.store.models import Folder, UrlAuthKey
from apps.store.services import get_folder, validate_folder_name
from mailhost.errors import NotFound

KEY_SIZE = 32


def _token(key: bytes, rump: bytes) -> str:
    return hmac.new(key, rump, hashlib.sha256).hexdigest()


def sign(mailbox: Mailbox, folder_name: str, rump: bytes) -> str:
    """RFC 4467 §7 GENURLAUTH: the token of ``rump``, a URL of one of the
    mailbox's folders. NotFound when the folder does not exist."""
    folder = get_folder(mailbox, validate_folder_name(folder_name))
    row, _ = UrlAuthKey.objects.get_or_create(
        folder=folder, defaults={"key": secrets.token_bytes(KEY_SIZE)})
    return _token(bytes(row.key), rump)


def verify(owner: str, folder_name: str, rump: bytes, token: str) -> Folder | None:
    """The folder a URL of ``owner``'s mailbox names, if ``token`` is the one its
    key makes for ``rump`` (RFC 4467 §9: else the URL is invalid)."""
    mailbox = Mailbox.objects.filter(address__iexact=owner).first()
    if mailbox is None:
        return None
    try:
        folder = get_folder(mailbox, validate_folder_name(folder_name))
    except NotFound:
        return None
    key = UrlAuthKey.objects.filter(folder=folder).values_list("key", flat=True).first()
    if key is None or not hmac.compare_digest(_token(bytes(key), rump), token.lower()):
        return None
    return folder


def reset_keys(mailbox: Mailbox, folder_name: str | None = None) -> None:
    """RFC 4467 §4 RESETKEY: new keys (made on demand) for one folder, or for
    every folder of the mailbox; URLs signed with the old ones stop working."""
    if folder_name is None:
        UrlAuthKey.objects.filter(folder__mailbox=mailbox).delete()
        return
    folder = get_folder(mailbox, validate_folder_name(folder_name))
    UrlAuthKey.objects.filter(folder=folder).delete()
