"""Migration 0005 carries each folder's subscribed flag over to the new
subscription list, and back when reversed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import make_mailbox

BEFORE = [("store", "0004_blob_text")]
AFTER = [("store", "0005_subscription")]


@pytest.mark.django_db(transaction=True)
def test_subscribed_folders_become_subscriptions_and_back():
    mailbox = make_mailbox()  # the directory's tables are not migrated here
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Folder = old.get_model("store", "Folder")
    for name, subscribed in [("INBOX", True), ("Lists", False), ("Lists/Work", True)]:
        Folder.objects.create(mailbox_id=mailbox.pk, name=name, subscribed=subscribed,
                              uidvalidity=1)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps
        assert sorted(new.get_model("store", "Subscription").objects.filter(
            mailbox_id=mailbox.pk).values_list("name", flat=True)) == ["INBOX", "Lists/Work"]
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)
        assert sorted(Folder.objects.filter(mailbox_id=mailbox.pk, subscribed=True)
                      .values_list("name", flat=True)) == ["INBOX", "Lists/Work"]
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
