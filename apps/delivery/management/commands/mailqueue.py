"""``manage.py mailqueue``: the outbound queue as ``mailq`` shows it, and
``--retry ID`` / ``--delete ID`` as ``postqueue -i`` / ``postsuper -d`` do."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.delivery import services
from apps.delivery.models import OutboundMessage


class Command(BaseCommand):
    help = "List the outbound queue; --retry ID delivers an entry now, --delete ID removes it."

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--retry", metavar="ID", help="queue ID to try again now")
        action.add_argument("--delete", metavar="ID", help="queue ID to remove (no bounce)")

    def handle(self, *args: object, **options: object) -> None:
        if options["retry"]:
            if not services.retry_now(str(options["retry"])):
                raise CommandError(f"no queued message {options['retry']}")
            self.stdout.write(f"{options['retry']}: will be retried now")
            return
        if options["delete"]:
            if not services.delete_queued(str(options["delete"])):
                raise CommandError(f"no queued message {options['delete']}")
            self.stdout.write(f"{options['delete']}: deleted")
            return
        messages = list(OutboundMessage.objects.select_related("blob")
                        .prefetch_related("entries").order_by("arrival"))
        if not messages:
            self.stdout.write("Mail queue is empty")
            return
        now = timezone.now()
        self.stdout.write(f"{'Queue ID':<14}{'Size':>9}  {'Arrival Time':<21}Sender/Recipient")
        recipients = 0
        for message in messages:
            entries = list(message.entries.all())
            active = any(e.claimed_until and e.claimed_until > now for e in entries)
            mark = "*" if active else " "
            self.stdout.write(f"{message.queue_id + mark:<14}{message.blob.size:>9}  "
                              f"{message.arrival:%a %b %d %H:%M:%S}  <{message.sender}>")
            for entry in entries:
                if entry.last_reply:
                    self.stdout.write(f"{'':<46}({entry.last_reply})")
                self.stdout.write(f"{'':<46}<{entry.recipient}> attempts={entry.attempts} "
                                  f"next={entry.next_attempt:%Y-%m-%d %H:%M:%S}")
            recipients += len(entries)
        self.stdout.write(f"-- {len(messages)} message(s), {recipients} recipient(s)")
