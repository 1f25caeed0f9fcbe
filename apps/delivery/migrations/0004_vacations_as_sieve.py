"""The automatic replies set in the webmail before they were Sieve: each one
that is on is written into its mailbox's active script, or into the script
that the settings page writes (made active) when none is active, as
apps/delivery/rules.py does from now on. The directory's forwarding
(Mailbox.forward_to) is left as it is: it keeps working where addresses are
resolved, and the settings page moves it into the script when it is saved."""

from django.db import migrations
from django.utils import timezone

from apps.sieve.sections import AutoReply, settings_section, with_section

GENERATED_NAME = "mailhost-settings"  # apps/delivery/rules.py


def write_scripts(apps, schema_editor):
    Vacation = apps.get_model("delivery", "Vacation")
    SieveScript = apps.get_model("sieve", "SieveScript")
    for vacation in Vacation.objects.filter(enabled=True).iterator():
        section = settings_section(
            reply=AutoReply(vacation.subject, vacation.body, vacation.start, vacation.end),
            forward_to=[], keep_copy=True)
        active = SieveScript.objects.filter(mailbox_id=vacation.mailbox_id, active=True).first()
        if active is not None:
            active.content = with_section(active.content, section)
            active.updated = timezone.now()
            active.save(update_fields=["content", "updated"])
        else:
            SieveScript.objects.update_or_create(
                mailbox_id=vacation.mailbox_id, name=GENERATED_NAME,
                defaults={"content": section, "active": True, "updated": timezone.now()})


class Migration(migrations.Migration):

    dependencies = [
        ("delivery", "0003_forwarding"),
        ("sieve", "0001_sieve_scripts"),
    ]

    operations = [migrations.RunPython(write_scripts, migrations.RunPython.noop)]
