"""``manage.py migrateblobs``: the local store's blobs to a real S3 server
(SeaweedFS) and back, resumable, with damaged source files reported and not
copied."""

from __future__ import annotations

import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.store import services as store
from apps.store.blobs import local_blob_store
from apps.store.models import Blob
from apps.store.s3 import S3BlobStore
from tests.factories import make_mailbox

pytestmark = pytest.mark.django_db


def _migrate(to: str) -> str:
    out = StringIO()
    call_command("migrateblobs", "--to", to, "--batch", "2", stdout=out, stderr=out)
    return out.getvalue()


def test_blobs_move_to_s3_and_back(s3_store: S3BlobStore, settings):
    s3_url = settings.MAILHOST_BLOB_STORE
    settings.MAILHOST_BLOB_STORE = ""  # a platform that began on the local disk
    mailbox = make_mailbox()
    messages = [store.deliver([mailbox], b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n))[0]
                for n in range(5)]
    local = local_blob_store()
    originals = {m.blob_id: local.read(m.blob_id) for m in messages}
    settings.MAILHOST_BLOB_STORE = s3_url

    s3_store.put_many([originals[messages[0].blob_id]])  # a run stopped after one blob
    damaged = messages[1].blob_id
    local.path(damaged).write_bytes(b"not what was delivered")
    with pytest.raises(CommandError, match="1 blobs could not be copied"):
        _migrate("s3")
    assert not s3_store.exists(damaged)
    local.path(damaged).write_bytes(originals[damaged])  # restored from a backup
    output = _migrate("s3")
    assert "done: 1 copied, 4 already there" in output
    assert "5/5" in output
    s3_store.cache.discard(damaged)
    assert {name: s3_store.read(name) for name in originals} == originals
    assert set(s3_store.files_older_than(-1)) == set(originals)

    shutil.rmtree(local.root)  # the local disk lost, or a new node
    local.tmp.mkdir(parents=True)
    assert "done: 5 copied, 0 already there" in _migrate("local")
    assert {name: local.read(name) for name in originals} == originals
    assert "done: 0 copied, 5 already there" in _migrate("local")  # nothing left to do
    assert Blob.objects.count() == 5


def test_the_command_needs_the_s3_store_configured(settings):
    settings.MAILHOST_BLOB_STORE = ""
    with pytest.raises(CommandError, match="MAILHOST_BLOB_STORE"):
        _migrate("s3")
