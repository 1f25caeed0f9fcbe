"""Two tenants side by side: tenant A (ours.example) whose administrator and
mailbox user try to reach tenant B (theirs.example) through every front end.

B's objects carry markers: strings that only B's data contains, so that a
test can tell from any answer whether B's data leaked into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from django.db.models import Model

from apps.api.models import ApiToken
from apps.api.services import create_token
from apps.delivery import services as delivery
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.directory import app_passwords
from apps.directory import services as directory
from apps.directory.administrators import create_administrator
from apps.directory.models import Alias, AppPassword, Domain, Mailbox, Role, User
from apps.store import services as store
from apps.store.models import Folder, Message
from apps.transfer.models import ImportJob
from tests.factories import PASSWORD

# B's folder names, and names that try to climb out of A's own folders into B's
# (other users' and shared namespaces as other servers spell them, relative
# paths, wildcards).
B_FOLDER = "Bravo Secret Plans"
B_SUBFOLDER = f"{B_FOLDER}/Acquisitions"
B_SUBJECT = "Bravo quarterly merger memo"
B_BODY = "bravo-confidential-body-7731"
ADMIN_PASSWORD = "admin password 1"
B_PASSWORD = "bravo password 99"  # not A's: A's password must not open B's mailbox


def letter(subject: str, body: str, *, sender: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return bytes(message)


@dataclass
class Tenant:
    domain: Domain
    admin: User
    mailbox: Mailbox
    alias: Alias
    folder: Folder
    messages: list[Message]
    queued: OutboundMessage
    token: ApiToken
    app_password: AppPassword
    import_job: ImportJob
    markers: list[str] = field(default_factory=list)

    def ids(self) -> dict[str, int | str]:
        """This tenant's objects by the kind of id a URL names."""
        return {"domain": self.domain.pk, "mailbox": self.mailbox.pk, "alias": self.alias.pk,
                "admin": self.admin.pk, "token": self.token.pk,
                "app_password": self.app_password.pk, "import_job": self.import_job.pk,
                "folder": self.folder.pk,
                "message": self.messages[0].pk, "queue": self.queued.queue_id}


def make_tenant(name: str, user: str, *, display_name: str, subject: str, body: str,
                folder: str, password: str) -> Tenant:
    domain = directory.create_domain(name)
    admin = create_administrator(f"boss@{name}", ADMIN_PASSWORD, role=Role.DOMAIN_ADMIN,
                                 domains=[domain], display_name=f"{display_name} Boss")
    mailbox = directory.create_mailbox(f"{user}@{name}", password, display_name=display_name)
    alias = directory.create_alias(f"sales-{user}@{name}", [mailbox.address])
    own = store.create_folder(mailbox, folder)
    store.create_folder(mailbox, f"{folder}/Acquisitions")
    messages = [
        store.deliver([mailbox], letter(f"{subject} {n}", body, sender=f"partner@far.{name}",
                                        to=mailbox.address))[0] for n in range(3)]
    messages += store.deliver([mailbox], letter(subject, body, sender="x@far.example",
                                                to=mailbox.address), folder=folder)
    queued = delivery.submit(sender=mailbox.address,
                             recipients=[delivery.RecipientSpec(f"partner@far.{name}")],
                             data=letter(subject, body, sender=mailbox.address,
                                         to=f"partner@far.{name}"))
    assert queued is not None
    token, _ = create_token(mailbox.user, name=f"{display_name} laptop")
    app_password, _ = app_passwords.create(mailbox, f"{folder} phone")
    import_job = ImportJob.objects.create(mailbox=mailbox, source=f"{folder} archive.mbox",
                                          status=ImportJob.Status.INTERRUPTED)
    markers = [name, mailbox.address, alias.address, admin.email, display_name, subject, body,
               folder, token.prefix, queued.queue_id, app_password.digest]
    return Tenant(domain, admin, mailbox, alias, own, messages, queued, token, app_password,
                  import_job, markers)


@pytest.fixture
def tenant_a(db) -> Tenant:
    return make_tenant("ours.example", "alice", display_name="Alfa Person",
                       subject="Alfa weekly note", body="alfa-body", folder="Alfa Projects",
                       password=PASSWORD)


@pytest.fixture
def tenant_b(tenant_a: Tenant) -> Tenant:
    return make_tenant("theirs.example", "zed", display_name="Zulu Bravoperson",
                       subject=B_SUBJECT, body=B_BODY, folder=B_FOLDER, password=B_PASSWORD)


def snapshot(tenant: Tenant) -> dict[str, list[tuple]]:
    """Every row of tenant B, to compare before and after A's attempts."""
    def rows(model: type[Model], **criteria: object) -> list[tuple]:
        return sorted(model.objects.filter(**criteria).values_list())

    users = [tenant.admin.pk, tenant.mailbox.user_id]
    return {
        "domain": rows(Domain, pk=tenant.domain.pk),
        "mailboxes": rows(Mailbox, domain=tenant.domain),
        "aliases": rows(Alias, domain=tenant.domain),
        "users": rows(User, pk__in=users),
        "tokens": rows(ApiToken, user__in=users),
        "app_passwords": rows(AppPassword, mailbox=tenant.mailbox),
        "import_jobs": rows(ImportJob, mailbox=tenant.mailbox),
        "folders": rows(Folder, mailbox=tenant.mailbox),
        "messages": rows(Message, folder__mailbox=tenant.mailbox),
        "queue": rows(QueueEntry, message=tenant.queued),
        "queued": rows(OutboundMessage, pk=tenant.queued.pk),
        "admins": sorted(tenant.domain.admins.values_list("pk", flat=True)),
    }


def leaked(tenant: Tenant, answer: str, asked: str) -> list[str]:
    """B's markers found in an answer, leaving out those the request itself
    carried (a form or an error message may echo what was sent)."""
    return [m for m in tenant.markers if m.lower() not in asked.lower()
            and m.lower() in answer.lower()]
