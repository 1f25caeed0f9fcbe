"""What part of the platform an administrator's operations pages cover,
from the one access module (apps/directory/access.py)."""

from __future__ import annotations

from apps.directory.access import domains_for, is_superadmin
from apps.directory.models import User


def managed_domains(user: User) -> list[str] | None:
    """None for a superadmin (everything); a domain administrator's domain names."""
    if is_superadmin(user):
        return None
    return list(domains_for(user).values_list("name", flat=True))
