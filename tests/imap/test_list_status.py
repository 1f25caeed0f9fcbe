"""LIST-STATUS (RFC 5819) of many folders: what a client reads for each folder
is what STATUS says of it, and the server reads them all in one query."""

from __future__ import annotations

import itertools
import re

from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.store import services as store
from apps.store.models import Flag
from tests.smtp.helpers import make_message

ITEMS = "MESSAGES UNSEEN DELETED RECENT UIDNEXT UIDVALIDITY HIGHESTMODSEQ SIZE"
FOLDERS = 100


def fill(mailbox) -> list[str]:  # type: ignore[no-untyped-def]
    """A hundred folders; every tenth holds mail (one message more each time),
    its first message seen, and in every twentieth deleted too."""
    names = [f"Projects/p{number:03d}" for number in range(FOLDERS)]
    for name in names:
        store.create_folder(mailbox, name)
    store.deliver_batch([store.DeliveryRequest([mailbox.pk], make_message(mailbox.address),
                                               folder=name)
                         for number, name in enumerate(names) if number % 10 == 0
                         for _ in range(number // 10 + 1)])
    for number, name in enumerate(names[::10]):
        folder = store.get_folder(mailbox, name)
        store.set_flags(folder, [1], mode="add",
                        flags=Flag.SEEN | (Flag.DELETED if number % 2 == 0 else 0))
    return names


def test_list_status_of_a_hundred_folders_says_what_status_says(raw, mailbox):
    names = fill(mailbox)
    lines = raw.command(f'LIST "" "Projects/*" RETURN (STATUS ({ITEMS}))')
    assert lines[-1].split()[1] == b"OK"
    statuses = {}
    for line, following in itertools.pairwise(lines):
        if line.startswith(b"* LIST "):
            name = line.split(b'"/" ')[1].strip().decode()
            if name in names:
                # RFC 5819 §2: the STATUS of a folder follows its LIST line.
                assert following.startswith(b"* STATUS " + name.encode() + b" (")
                statuses[name] = following
    assert sorted(statuses) == names
    for name in names:
        assert raw.command(f"STATUS {name} ({ITEMS})")[0] == statuses[name]
    assert re.search(rb"MESSAGES 10 UNSEEN 9 DELETED 0 RECENT 10 UIDNEXT 11 ",
                     statuses["Projects/p090"])
    assert re.search(rb"MESSAGES 1 UNSEEN 0 DELETED 1 RECENT 1 UIDNEXT 2 ",
                     statuses["Projects/p000"])
    assert b"MESSAGES 0 UNSEEN 0 DELETED 0 RECENT 0 UIDNEXT 1 " in statuses["Projects/p001"]


def test_the_statuses_of_many_folders_are_one_query(mailbox):
    fill(mailbox)
    folders = [f.pk for f in store.list_folders(mailbox)]
    with CaptureQueriesContext(connection) as queries:
        statuses = store.folders_status(folders, ITEMS.split())
    assert len(queries) == 1 and len(statuses) == len(folders) > FOLDERS
    assert statuses[store.get_folder(mailbox, "Projects/p050").pk]["MESSAGES"] == 6
