"""The audit log: one ``record`` function, called by the directory services
for every change they make, whichever front end (panel, API, command) asked.

The front end only says who is acting, with an ``Actor`` passed to the
service as ``actor=``; a change made without one (a management command, a
test) is recorded as made by the system.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.directory.models import AuditEntry, User

# Shown instead of a secret's old and new value.
SECRET_CHANGED = "changed"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class Actor:
    """Who makes a change, and from which address."""

    user: User | None
    ip: str | None = None

    @classmethod
    def of(cls, request: Any) -> Actor:
        """The signed-in person of a Django or DRF request. REMOTE_ADDR is the
        peer as the server saw it (a proxy in front sets it right, as for the
        mail listeners' PROXY protocol)."""
        user = getattr(request, "user", None)
        return cls(user if user is not None and user.is_authenticated else None,
                   request.META.get("REMOTE_ADDR") or None)


def record(actor: Actor | None, action: str, object_type: str, object_repr: str, *,
           domain_name: str = "", changes: dict[str, Any] | None = None) -> AuditEntry:
    user = actor.user if actor else None
    return AuditEntry.objects.create(
        actor=user, actor_email=user.email if user else "", ip=actor.ip if actor else None,
        action=action, object_type=object_type, object_repr=object_repr[:320],
        domain_name=domain_name, changes=changes or {},
    )
