from __future__ import annotations

import pytest
from django.test import Client

from apps.directory.models import Domain, Role, User

ADMIN_PASSWORD = "admin password 1"


@pytest.fixture
def superadmin(db) -> User:
    return User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)


@pytest.fixture
def domain_admin(ours: Domain) -> User:
    user = User.objects.create_user("boss@ours.example", ADMIN_PASSWORD, role=Role.DOMAIN_ADMIN)
    user.administered_domains.add(ours)
    return user


@pytest.fixture
def root_client(client: Client, superadmin: User) -> Client:
    client.force_login(superadmin)
    return client


@pytest.fixture
def boss_client(client: Client, domain_admin: User) -> Client:
    client.force_login(domain_admin)
    return client
