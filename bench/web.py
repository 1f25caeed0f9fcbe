"""Admin panel benchmark: server time of the panel's list pages at scale.

    python bench/web.py [--mailboxes 100000] [--domains 1000] [--runs 15]
                        [--database-url postgres://…/mailhost_bench]

Fills a database with --mailboxes mailboxes over --domains domains (bulk
inserts with one precomputed password hash, not the provisioning services:
hashing 100,000 passwords is not what is measured), each with an INBOX
holding some bytes so that usage bars have something to add up. Then, in
this process through Django's test client (so the figure is server time:
URL routing, middleware, the view, its queries and the template; no
network), it times each page --runs times after a warm-up and prints the
median: the panel's mailbox list, a mailbox search, the domain list and a
domain's page, and as the reference measured in the same run Django's own
admin changelist for Mailbox and its search on the same data. The issue asks
for each panel list page under 100 ms at this scale.

Without --database-url the data goes into a temporary SQLite file. A
PostgreSQL database given with --database-url is emptied (manage.py flush)
and filled, unless it already holds exactly this many mailboxes, in which
case they are reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--mailboxes", type=int, default=100_000)
parser.add_argument("--domains", type=int, default=1_000)
parser.add_argument("--runs", type=int, default=15)
parser.add_argument("--database-url", default="")
args = parser.parse_args()

DATA = Path(tempfile.mkdtemp(prefix="bench-web-"))
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "mailhost.settings",
    "MAILHOST_DATA_DIR": str(DATA),
    "MAILHOST_LOG_LEVEL": "WARNING",
    "MAILHOST_ALLOWED_HOSTS": "testserver",
})
os.environ.pop("REDIS_URL", None)
if args.database_url:
    os.environ["DATABASE_URL"] = args.database_url
else:
    os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.directory.models import Domain, Mailbox, Role, User  # noqa: E402
from apps.store.models import Folder, SpecialUse  # noqa: E402

BATCH = 5_000
LIMIT_MS = 100.0


def fill(mailboxes: int, domains: int) -> None:
    now = timezone.now()
    password = make_password("bench password 1")
    per_domain = -(-mailboxes // domains)
    with transaction.atomic():
        Domain.objects.bulk_create(
            [Domain(name=f"d{n:04}.bench.example", default_quota=1024**3, created=now)
             for n in range(domains)], batch_size=BATCH)
        domain_ids = list(Domain.objects.order_by("name").values_list("pk", flat=True))
    for start in range(0, mailboxes, BATCH):
        numbers = range(start, min(start + BATCH, mailboxes))
        with transaction.atomic():
            users = User.objects.bulk_create(
                [User(email=address(n, per_domain), password=password, role=Role.MAILBOX_USER,
                      date_joined=now) for n in numbers], batch_size=BATCH)
            boxes = Mailbox.objects.bulk_create(
                [Mailbox(domain_id=domain_ids[n // per_domain],
                         local_part=address(n, per_domain).partition("@")[0],
                         address=address(n, per_domain), user_id=user.pk,
                         quota=1024**3, created=now)
                 for n, user in zip(numbers, users, strict=True)], batch_size=BATCH)
            Folder.objects.bulk_create(
                [Folder(mailbox_id=box.pk, name="INBOX", special_use="", uidvalidity=1,
                        message_count=n % 50, total_size=(n * 7919) % (1024**3))
                 for n, box in zip(numbers, boxes, strict=True)]
                + [Folder(mailbox_id=box.pk, name="Junk", special_use=SpecialUse.JUNK,
                          uidvalidity=1) for box in boxes], batch_size=BATCH)
        print(f"\r  {min(start + BATCH, mailboxes):,} mailboxes", end="", flush=True)
    print()


def address(number: int, per_domain: int) -> str:
    return f"user{number:06}@d{number // per_domain:04}.bench.example"


def median_ms(client: Client, url: str, runs: int) -> float:
    for _ in range(3):  # warm: templates compiled, connection open, caches filled
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    call_command("migrate", verbosity=0)
    if Mailbox.objects.count() != args.mailboxes:
        if args.database_url:
            call_command("flush", interactive=False, verbosity=0)
        print(f"filling {connection.vendor}: {args.mailboxes:,} mailboxes over "
              f"{args.domains:,} domains")
        started = time.perf_counter()
        fill(args.mailboxes, args.domains)
        print(f"  filled in {time.perf_counter() - started:.0f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
    admin, _ = User.objects.get_or_create(
        email="bench-root@admin.example", defaults={"role": Role.SUPERADMIN})
    client = Client()
    client.force_login(admin)
    domain = Domain.objects.order_by("name")[args.domains // 2]
    needle = address(args.mailboxes * 2 // 3, -(-args.mailboxes // args.domains))[:10]
    pages = [
        ("mailbox list", "/manage/mailboxes/", "/admin/directory/mailbox/"),
        (f"mailbox search {needle!r}", f"/manage/mailboxes/?q={needle}",
         f"/admin/directory/mailbox/?q={needle}"),
        ("domain list", "/manage/domains/", "/admin/directory/domain/"),
        ("domain page", f"/manage/domains/{domain.pk}/",
         f"/admin/directory/domain/{domain.pk}/change/"),
    ]
    print(f"\nserver time, median of {args.runs} runs ({connection.vendor}, "
          f"{args.mailboxes:,} mailboxes):")
    print(f"{'page':32} {'panel':>10} {'Django admin':>14} {'ratio':>7}  under {LIMIT_MS:.0f} ms")
    for name, ours, reference in pages:
        ours_ms = median_ms(client, ours, args.runs)
        reference_ms = median_ms(client, reference, args.runs)
        print(f"{name:32} {ours_ms:8.1f} ms {reference_ms:11.1f} ms {ours_ms / reference_ms:7.2f}"
              f"  {'yes' if ours_ms < LIMIT_MS else 'NO'}")


if __name__ == "__main__":
    main()
