"""Message trace: what happened to each message, stage by stage.

Each service that moves a message on (SMTP acceptance, the checks, filing,
each outbound attempt, a report to the sender) builds a ``TraceEvent`` and
hands it to ``record`` inside the transaction that does the work, so the trace
never claims what did not commit. ``record`` writes the events in one bulk
insert and bumps the hourly flow counters in one upsert, whatever the size of
the batch. The admin panel reads events and counters, never the messages.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from apps.store.models import FlowCounter, TraceEvent, TraceKind
from mailhost import metrics
from mailhost.compiled import CompiledInsert

# Counter names, as the dashboard's chart shows them.
FLOW_KINDS = ("received", "delivered", "junked", "sent", "deferred", "bounced")
_COUNTED = {TraceKind.RECEIVED: "received", TraceKind.SENT: "sent",
            TraceKind.DEFERRED: "deferred", TraceKind.BOUNCED: "bounced"}
COUNTER_SHARDS = 8

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def message_id_of(data: bytes) -> str:
    """The Message-ID without its angle brackets (RFC 5322 §3.6.4), read from
    the header section only; empty when there is none."""
    end = _HEADER_END.search(data)
    match = _MESSAGE_ID.search(data, 0, end.start() if end else len(data))
    if match is None:
        return ""
    value = b" ".join(match.group(1).split()).decode("utf-8", "replace")
    return normalise_message_id(value)


def normalise_message_id(value: str) -> str:
    return value.strip().strip("<>").strip()[:255]


def addresses_text(*addresses: str) -> str:
    """The ``addresses`` column: " a@x b@y " (see TraceEvent)."""
    kept = dict.fromkeys(a.lower() for a in addresses if a)
    return f" {' '.join(kept)} " if kept else ""


def event(kind: str, queue_id: str, *, addresses: Iterable[str] = (), message_id: str = "",
          **detail: object) -> TraceEvent:
    """An unsaved event, for ``record`` (or a DeliveryRequest) to write; its
    time is now, when the stage happened, not when its batch commits."""
    return TraceEvent(kind=kind, queue_id=queue_id, message_id=message_id,
                      addresses=addresses_text(*addresses), detail=detail)


def accepted(
    kind: str, *, queue_id: str, listener: str, peer_ip: str, helo: str, tls: bool,
    user: str, sender: str, recipients: Sequence[str], data: bytes,
) -> TraceEvent:
    """SMTP acceptance, on the MX (``received``) or on submission (``submitted``)."""
    return event(kind, queue_id, addresses=[sender, *recipients],
                 message_id=message_id_of(data), listener=listener, peer_ip=peer_ip,
                 helo=helo, tls=tls, user=user, sender=sender, recipients=list(recipients),
                 size=len(data))


def record(events: Sequence[TraceEvent]) -> None:
    """Write events and bump their counters: call it inside the transaction of
    the work the events describe. Two statements whatever the number of events."""
    if not events:
        return
    _insert_events.insert(events)
    counts: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    submitted = 0
    for item in events:
        if item.kind == TraceKind.FILED:
            counts["delivered"] += 1
            if item.detail.get("junk"):
                counts["junked"] += 1
        elif item.kind in _COUNTED:
            counts[_COUNTED[TraceKind(item.kind)]] += 1
        elif item.kind == TraceKind.SUBMITTED:
            submitted += 1
        elif item.kind == TraceKind.VERDICT:
            verdicts.update(_verdicts(item.detail))
    if counts:
        bump_counters(counts, hour=int(time.time() // 3600))
    # Prometheus counts what committed only; in memory, no statement.
    stages = Counter({_STAGE.get(kind, kind): n for kind, n in counts.items()})
    if submitted:
        stages["submitted"] = submitted
    if stages or verdicts:
        transaction.on_commit(partial(_export, stages, verdicts))


_insert_events = CompiledInsert(TraceEvent)

# The dashboard's "delivered" is a filing into a local mailbox.
_STAGE = {"delivered": "filed"}


def _verdicts(detail: dict[str, object]) -> list[str]:
    """One verdict per recipient mailbox, spam (to Junk) or ham; or one
    "unchecked" for a message filed without its checks."""
    mailboxes = detail.get("mailboxes")
    if not detail.get("checked") or not isinstance(mailboxes, list):
        return ["unchecked"]
    return ["spam" if m.get("junk") else "ham" for m in mailboxes]


def _export(stages: Counter[str], verdicts: Counter[str]) -> None:
    metrics.count(metrics.MESSAGES, stages)
    metrics.count(metrics.SPAM_VERDICTS, verdicts)


def bump_counters(counts: Counter[str], *, hour: int) -> None:
    """One upsert adding to this hour's counters (one random shard)."""
    shard = random.randrange(COUNTER_SHARDS)
    table = connection.ops.quote_name(FlowCounter._meta.db_table)
    rows = sorted(counts.items())
    placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params: list[object] = []
    for kind, count in rows:
        params += [hour, kind, shard, count]
    # ON CONFLICT … DO UPDATE is the same on SQLite (3.24+) and PostgreSQL; the
    # ORM's update_conflicts can only overwrite, not add.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (hour, kind, shard, count) VALUES {placeholders} "  # noqa: S608
            f"ON CONFLICT (hour, kind, shard) DO UPDATE SET count = {table}.count + "
            "excluded.count", params)


def flow_counts(since_hour: int) -> dict[tuple[int, str], int]:
    """(hour, kind) -> messages, from ``since_hour`` on; one query."""
    rows = (FlowCounter.objects.filter(hour__gte=since_hour).values("hour", "kind")
            .annotate(total=Sum("count")).values_list("hour", "kind", "total"))
    return {(hour, kind): total for hour, kind, total in rows}


def prune(*, now: float | None = None) -> int:
    """Forget events older than MAILHOST_TRACE_RETENTION_DAYS, and counters
    older than the dashboard's 30 days (or the retention, if longer)."""
    days = settings.MAILHOST_TRACE_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = TraceEvent.objects.filter(time__lt=cutoff).delete()
    oldest_hour = int((now or time.time()) // 3600) - 24 * max(days, 31)
    FlowCounter.objects.filter(hour__lt=oldest_hour).delete()
    return deleted


# --- reading: the admin panel's message trace ---------------------------------------


@dataclass
class Timeline:
    """Every recorded stage of one message (one queue id), oldest first."""

    queue_id: str
    events: list[TraceEvent]

    @property
    def started(self) -> datetime:
        return self.events[0].time

    @property
    def message_id(self) -> str:
        return next((e.message_id for e in self.events if e.message_id), "")

    @property
    def envelope(self) -> dict[str, object]:
        """Sender and recipients as the first stage that knew them recorded them."""
        return next((e.detail for e in self.events if "sender" in e.detail), {})


def domain_filter(domains: Sequence[str]) -> Q:
    """Events naming an address in one of ``domains``."""
    query = Q(pk__in=[])
    for name in domains:
        query |= Q(addresses__contains=f"@{name.lower()} ")
    return query


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _trimmed(item: TraceEvent, domains: Sequence[str]) -> TraceEvent:
    """A domain administrator sees the recipients (and their verdicts) in their
    domains, or all of them when the sender is theirs."""
    sender = str(item.detail.get("sender") or item.detail.get("to") or "")
    if _domain_of(sender) in domains:
        return item
    if isinstance(item.detail.get("recipients"), list):
        item.detail["recipients"] = [
            r for r in item.detail["recipients"] if _domain_of(r) in domains]
    if isinstance(item.detail.get("mailboxes"), list):
        item.detail["mailboxes"] = [
            m for m in item.detail["mailboxes"] if _domain_of(m["mailbox"]) in domains]
    return item


def search(
    *, address: str = "", message_id: str = "", queue_id: str = "",
    since: datetime | None = None, until: datetime | None = None,
    domains: Sequence[str] | None = None, limit: int = 50,
) -> list[Timeline]:
    """The most recent messages matching every criterion given, each with its
    whole timeline; ``domains`` (None: all) limits them to messages to or from
    those domains, and their stages to those naming them. Two queries."""
    matching = TraceEvent.objects.all()
    if address:
        matching = matching.filter(addresses__contains=address.strip().lower())
    if message_id:
        matching = matching.filter(message_id=normalise_message_id(message_id))
    if queue_id:
        matching = matching.filter(queue_id=queue_id.strip().upper())
    if since:
        matching = matching.filter(time__gte=since)
    if until:
        matching = matching.filter(time__lt=until)
    if domains is not None:
        matching = matching.filter(domain_filter(domains))
    latest = list(matching.values("queue_id").annotate(last=Max("time"))
                  .order_by("-last").values_list("queue_id", flat=True)[:limit])
    events = TraceEvent.objects.filter(queue_id__in=latest)
    if domains is not None:
        events = events.filter(domain_filter(domains))
    by_queue_id: dict[str, list[TraceEvent]] = {queue_id: [] for queue_id in latest}
    for item in events.order_by("time", "pk"):
        by_queue_id[item.queue_id].append(
            item if domains is None else _trimmed(item, domains))
    return [Timeline(queue_id, found) for queue_id, found in by_queue_id.items() if found]


def last_delivery() -> datetime | None:
    """When a message was last filed here or delivered to a remote server."""
    return (TraceEvent.objects.filter(kind__in=[TraceKind.FILED, TraceKind.SENT])
            .order_by("-time").values_list("time", flat=True).first())
