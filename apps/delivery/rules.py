"""The webmail's forwarding and automatic reply, written as Sieve.

The settings are kept for the settings page's forms (Forwarding, Vacation)
and written as the marked section (apps/sieve/sections.py) of the mailbox's
active Sieve script, which is what runs when mail is filed
(apps/delivery/filing.py): one mechanism for what the webmail sets and what a
ManageSieve client uploads, and a ManageSieve client lists and GETs what the
webmail set.

- No active script: the section becomes the script ``GENERATED_NAME``, made
  active.
- An active script (that one, or one uploaded over ManageSieve): its section
  is replaced, or added after its ``require`` lines; the rest stays as the
  user wrote it. A script that uploads without the section turns the
  webmail's settings off until they are saved again (``RulesState`` says so
  on the settings page).
- The generated script left with nothing in it is deleted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from apps.delivery.models import Forwarding, Vacation
from apps.directory import services as directory
from apps.directory.audit import Actor
from apps.directory.models import Mailbox
from apps.sieve import services as sieve
from apps.sieve.models import SieveScript
from apps.sieve.sections import AutoReply, section_of, settings_section, with_section

# The name of the script the settings page writes when no script is active.
GENERATED_NAME = "mailhost-settings"


def _section(mailbox: Mailbox) -> str:
    vacation = Vacation.objects.filter(mailbox=mailbox, enabled=True).first()
    forwarding = Forwarding.objects.filter(mailbox=mailbox).first()
    return settings_section(
        reply=AutoReply(vacation.subject, vacation.body, vacation.start, vacation.end)
        if vacation else None,
        forward_to=forwarding.addresses if forwarding else [],
        keep_copy=forwarding.keep_copy if forwarding else True)


def write_rules(mailbox: Mailbox) -> None:
    """Write the mailbox's settings into its active script (see above).
    Raises ScriptInvalid or LimitExceeded when the user's own script cannot
    take the section; call it in the transaction that saves the settings, so
    that both or neither change."""
    section = _section(mailbox)
    with transaction.atomic():
        active = (SieveScript.objects.select_for_update()
                  .filter(mailbox=mailbox, active=True).first())
        if active is None:
            if section:
                sieve.put_script(mailbox, GENERATED_NAME, section)
                sieve.set_active(mailbox, GENERATED_NAME)
            return
        content = with_section(active.content, section)
        if content == active.content:
            return
        if active.name == GENERATED_NAME and not content.strip():
            sieve.set_active(mailbox, "")
            sieve.delete_script(mailbox, GENERATED_NAME)
            return
        try:
            sieve.put_script(mailbox, active.name, content)
        except sieve.ScriptInvalid as error:
            # Say whose script it is: the user did not write the section.
            raise sieve.ScriptInvalid(
                f"your script “{active.name}” cannot take these settings ({error.message}); "
                "put its require commands on lines of their own, with a ManageSieve "
                "client") from None


def set_forwarding(mailbox: Mailbox, *, addresses: Sequence[str], keep_copy: bool,
                   actor: Actor | None = None) -> Forwarding:
    """Forward the mailbox's mail (a Sieve redirect, with SRS through the
    outbound queue); no addresses turns it off. Forwarding that the directory
    did for this mailbox (set here before, or by an administrator) moves into
    the script, so that a message is not forwarded twice."""
    targets = directory.forward_targets(mailbox, addresses)
    with transaction.atomic():
        forwarding, _ = Forwarding.objects.update_or_create(
            mailbox=mailbox, defaults={"addresses": targets, "keep_copy": keep_copy})
        if mailbox.forward_to:
            directory.update_mailbox(mailbox, forward_to=[], actor=actor)
        write_rules(mailbox)
    return forwarding


def forwarding_of(mailbox: Mailbox) -> Forwarding:
    """The forwarding the settings page shows: the webmail's own, else the
    directory's, which saving the page moves into the script."""
    own = Forwarding.objects.filter(mailbox=mailbox).first()
    if own is not None and (own.addresses or not mailbox.forward_to):
        return own
    return Forwarding(mailbox=mailbox, addresses=list(mailbox.forward_to),
                      keep_copy=mailbox.forward_keep_copy if mailbox.forward_to else True)


@dataclass(frozen=True)
class RulesState:
    """What the settings page says about the scripts: the active one, whether
    the user wrote it (over ManageSieve), and whether the page's settings are
    in it as last saved."""

    active: SieveScript | None
    hand_written: bool
    in_effect: bool


def rules_state(mailbox: Mailbox) -> RulesState:
    active = SieveScript.objects.filter(mailbox=mailbox, active=True).first()
    content = active.content if active else ""
    hand_written = active is not None and (
        active.name != GENERATED_NAME or with_section(content, "") != "")
    return RulesState(active, hand_written, section_of(content) == _section(mailbox))
