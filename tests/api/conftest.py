from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from apps.api.services import create_token
from apps.directory.models import Domain, Mailbox, Role, User

Client = Callable[[User], APIClient]


@pytest.fixture
def client_for() -> Client:
    """An API client that signs in with a fresh token of ``user``."""

    def make(user: User) -> APIClient:
        _, key = create_token(user, name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def superadmin(db) -> User:
    return User.objects.create_superuser("root@admin.example", "root password 1")


@pytest.fixture
def domain_admin(ours: Domain) -> User:
    user = User.objects.create_user("admin@ours.example", "admin password 1",
                                    role=Role.DOMAIN_ADMIN)
    user.administered_domains.add(ours)
    return user


@pytest.fixture
def as_root(client_for: Client, superadmin: User) -> APIClient:
    return client_for(superadmin)


@pytest.fixture
def as_admin(client_for: Client, domain_admin: User) -> APIClient:
    return client_for(domain_admin)


@pytest.fixture
def as_alice(client_for: Client, alice: Mailbox) -> APIClient:
    return client_for(alice.user)
