"""Fixtures of the operations pages: administrators of both kinds, and the
delivery tests' remote server, settings and synchronous queue run."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.directory.models import Role, User
from tests.delivery.conftest import _delivery_settings, receiver, run_queue  # noqa: F401
from tests.factories import make_domain

ADMIN_PASSWORD = "admin password 1"


@pytest.fixture
def superadmin(db) -> User:
    return User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)


@pytest.fixture
def domain_admin(db) -> User:
    """Administers ours.example only; theirs.example exists beside it."""
    ours = make_domain("ours.example")
    make_domain("theirs.example")
    admin = User.objects.create_user("boss@admin.example", ADMIN_PASSWORD,
                                     role=Role.DOMAIN_ADMIN)
    admin.administered_domains.add(ours)
    return admin


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client
