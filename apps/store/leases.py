"""Leases: one node at a time runs a named piece of work, though beat runs on
every node (DESIGN.md, Scale-out).

A lease is a database row (``Lease``): taken by an UPDATE of an expired row or
an INSERT of a missing one, so that of two concurrent takers exactly one wins,
on PostgreSQL (the row lock makes the loser re-read the row) and on SQLite
(writers are serialised). While its work runs the holder extends the lease
every third of MAILHOST_LEASE_SECONDS from a thread; a holder that dies stops
extending it and another node takes the work over once it has expired, within
MAILHOST_LEASE_SECONDS. The expiry is compared with the nodes' own clocks,
which a cluster keeps in step with NTP.

``run_periodic`` (the task beat sends, apps/store/tasks.py) also keeps the
lease after the work until just before the next period is due, so that the
same period's calls from the other nodes' beats find it held and skip.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.store.models import Lease

log = logging.getLogger(__name__)


def new_holder() -> str:
    """A name for one taking of a lease: host, process and a random part, so
    that two threads of one process are two holders."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def take(name: str, *, holder: str, until: datetime) -> bool:
    """Take or extend lease ``name`` for ``holder`` until ``until``: True if
    ``holder`` holds it now, False while someone else's has not expired."""
    now = timezone.now()
    with transaction.atomic():
        if Lease.objects.filter(Q(expires__lte=now) | Q(holder=holder), name=name).update(
                holder=holder, expires=until):
            return True
        try:
            with transaction.atomic():
                Lease.objects.create(name=name, holder=holder, expires=until)
        except IntegrityError:  # a live lease, or another taker inserted first
            return False
    return True


def keep_until(name: str, *, holder: str, until: datetime) -> None:
    """Hold on to a lease we hold until ``until``, or give it up now if that
    has passed (a lease taken by someone else meanwhile is theirs)."""
    if until > timezone.now():
        Lease.objects.filter(name=name, holder=holder).update(expires=until)
    else:
        Lease.objects.filter(name=name, holder=holder).delete()


def _extend_until_stopped(name: str, holder: str, stop: threading.Event) -> None:
    ttl = settings.MAILHOST_LEASE_SECONDS
    try:
        while not stop.wait(ttl / 3):
            until = timezone.now() + timedelta(seconds=ttl)
            if not Lease.objects.filter(name=name, holder=holder).update(expires=until):
                log.warning("lease %s was lost by %s while its work ran", name, holder)
                return
    except Exception:
        log.exception("extending lease %s failed", name)
    finally:
        connection.close()  # this thread's own connection


@contextmanager
def held(name: str, *, keep_for: timedelta | None = None) -> Iterator[bool]:
    """Run a block under lease ``name``: yields False (run nothing) if another
    holder has it, True if we took it. The lease is extended while the block
    runs and given up after it, or kept ``keep_for`` from when it was taken."""
    holder = new_holder()
    taken_at = timezone.now()
    if not take(name, holder=holder,
                until=taken_at + timedelta(seconds=settings.MAILHOST_LEASE_SECONDS)):
        yield False
        return
    stop = threading.Event()
    extender = threading.Thread(target=_extend_until_stopped, args=(name, holder, stop),
                                name=f"lease {name}", daemon=True)
    extender.start()
    try:
        yield True
    finally:
        stop.set()
        extender.join()
        keep_until(name, holder=holder, until=taken_at + (keep_for or timedelta(0)))
