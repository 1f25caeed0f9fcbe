"""An mbox imported from the admin panel, in a real browser against the real
web server: the upload queues a job, a worker runs it (here the task, run as
the worker runs it), and the mailbox page shows its progress as it goes.
A second import of the same file is tests/transfer/test_jobs.py's."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from apps.directory.models import User
from apps.store.blobs import get_blob_store
from apps.store.models import Message
from apps.transfer.formats import mbox_entry
from apps.transfer.models import ImportJob
from apps.transfer.tasks import run_import_job
from tests.conftest import sign_in
from tests.factories import make_mailbox
from tests.transfer.test_files import SAMPLES, corpus_message
from tests.webadmin.directory.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow


def test_an_mbox_uploaded_in_the_panel_is_imported(web_server, page: Page,
                                                    tmp_path: Path) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    eve = make_mailbox("eve@ours.example")
    mbox = tmp_path / "old-mail.mbox"
    mbox.write_bytes(b"".join(mbox_entry(corpus_message(name), datetime(2020, 5, 6, tzinfo=UTC))
                              for name in SAMPLES))
    sign_in(page, web_server.url, "root@admin.example", ADMIN_PASSWORD)
    page.goto(f"{web_server.url}/manage/mailboxes/{eve.pk}/")
    expect(page.get_by_text("No imports yet.")).to_be_visible()

    page.get_by_label("mbox file").set_input_files(str(mbox))
    page.get_by_label("Into folder").fill("Old/Saved")
    page.get_by_role("button", name="Import mail").click()
    expect(page.get_by_role("status")).to_contain_text("Import of old-mail.mbox queued.")
    job = page.locator("article.import-job")
    expect(job).to_contain_text("Waiting for a worker: 0 of 0 messages")

    run_import_job(ImportJob.objects.get(status=ImportJob.Status.QUEUED).pk)
    # The page polls while a job is unfinished: no reload.
    expect(job).to_contain_text(re.compile(
        r"Done: 5 of 5 messages, 21\.1\sKB read \([0-9.]+\s[KM]?B(ytes)?/s\) · 5 imported, "
        r"0 there already"))
    expect(job.locator("progress")).to_have_attribute("value", "5")

    assert Message.objects.filter(folder__mailbox=eve, folder__name="Old/Saved").count() == 5
    assert not get_blob_store().exists(ImportJob.objects.get().upload)  # the upload is gone
