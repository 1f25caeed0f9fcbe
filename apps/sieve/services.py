"""Sieve scripts: stored per mailbox, validated on upload, one active. The
active one runs when a message is filed, on every delivery path
(apps/delivery/filing.py).

ManageSieve (apps/sieve/session.py) and the webmail's settings
(apps/delivery/rules.py) are front ends on the functions here."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.directory.models import Mailbox
from apps.sieve.commands import compile_script
from apps.sieve.grammar import Command, SieveSyntaxError
from apps.sieve.models import SieveScript
from mailhost.errors import Conflict, Invalid, LimitExceeded, NotFound


class ScriptInvalid(Invalid):
    """The script is not valid Sieve."""

    code = "sieve_invalid"


class ScriptActive(Conflict):
    """The active script cannot be deleted (RFC 5804 §2.10)."""

    code = "sieve_active"


# --- scripts ------------------------------------------------------------------------


def check_script(content: str) -> list[Command]:
    """The compiled script, or ScriptInvalid saying which line is at fault."""
    if len(content.encode()) > settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE:
        raise LimitExceeded("script larger than "
                            f"{settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE} octets", quota="MAXSIZE")
    try:
        return compile_script(content)
    except SieveSyntaxError as error:
        raise ScriptInvalid(str(error), line=error.line) from None


def _valid_name(name: str) -> str:
    # RFC 5804 §1.6: no control characters, no more than the storage allows.
    if not name or len(name) > 128 or any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f
                                          for c in name) or "\u2028" in name:
        raise Invalid(f"{name[:40]!r} is not a valid script name")
    return name


def have_space(mailbox: Mailbox, name: str, size: int) -> None:
    """RFC 5804 §2.5: raises LimitExceeded when a script of ``size`` octets
    under ``name`` would not fit."""
    if size > settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE:
        raise LimitExceeded("script larger than "
                            f"{settings.MAILHOST_SIEVE_MAX_SCRIPT_SIZE} octets", quota="MAXSIZE")
    scripts = SieveScript.objects.filter(mailbox=mailbox)
    if (scripts.count() >= settings.MAILHOST_SIEVE_MAX_SCRIPTS
            and not scripts.filter(name=name).exists()):
        raise LimitExceeded(f"at most {settings.MAILHOST_SIEVE_MAX_SCRIPTS} scripts",
                            quota="MAXSCRIPTS")


def put_script(mailbox: Mailbox, name: str, content: str) -> SieveScript:
    """Store (create or replace) a script after checking it (RFC 5804 §2.6)."""
    _valid_name(name)
    check_script(content)
    have_space(mailbox, name, len(content.encode()))
    script, _ = SieveScript.objects.update_or_create(
        mailbox=mailbox, name=name, defaults={"content": content, "updated": timezone.now()})
    return script


def list_scripts(mailbox: Mailbox) -> list[SieveScript]:
    return list(SieveScript.objects.filter(mailbox=mailbox).order_by("name"))


def get_script(mailbox: Mailbox, name: str) -> SieveScript:
    script = SieveScript.objects.filter(mailbox=mailbox, name=name).first()
    if script is None:
        raise NotFound(f"no script named {name[:80]}")
    return script


def set_active(mailbox: Mailbox, name: str) -> None:
    """Make ``name`` the active script; the empty name deactivates all
    (RFC 5804 §2.8)."""
    with transaction.atomic():
        if name:
            script = get_script(mailbox, name)
        SieveScript.objects.filter(mailbox=mailbox, active=True).exclude(name=name).update(
            active=False)
        if name:
            SieveScript.objects.filter(pk=script.pk).update(active=True)


def delete_script(mailbox: Mailbox, name: str) -> None:
    script = get_script(mailbox, name)
    if script.active:
        raise ScriptActive(f"{name[:80]} is the active script")
    script.delete()


def rename_script(mailbox: Mailbox, old: str, new: str) -> None:
    """RFC 5804 §2.11.1: the active script stays active under its new name."""
    _valid_name(new)
    script = get_script(mailbox, old)
    try:
        with transaction.atomic():
            SieveScript.objects.filter(pk=script.pk).update(name=new, updated=timezone.now())
    except IntegrityError:
        raise Conflict(f"a script named {new[:80]} exists already") from None
