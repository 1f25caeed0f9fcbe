"""factory_boy factories over the directory services (so tests get the same
validation and side effects as real provisioning)."""

from __future__ import annotations

import itertools

from apps.directory import services
from apps.directory.models import Domain, Mailbox

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def make_domain(name: str | None = None, **kwargs: object) -> Domain:
    return services.create_domain(name or f"d{next(_counter)}.example", **kwargs)  # type: ignore[arg-type]


def make_mailbox(address: str | None = None, *, password: str = PASSWORD,
                 quota: int | None = None, domain: Domain | None = None) -> Mailbox:
    if address is None:
        domain = domain or make_domain()
        address = f"user{next(_counter)}@{domain.name}"
    else:
        domain_name = address.rpartition("@")[2]
        if not Domain.objects.filter(name=domain_name.lower()).exists():
            make_domain(domain_name)
    return services.create_mailbox(address, password, quota=quota)


def forget_text_index() -> None:
    """Leave every stored blob without its full-text index row, as blobs stored
    before the index existed are (store migrations 0004 and 0009)."""
    from apps.store.models import Blob, BlobText

    BlobText.objects.all().delete()
    Blob.objects.update(text_indexed=False)
