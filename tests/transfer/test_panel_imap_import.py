"""A remote IMAP account imported from the admin panel, in a real browser
against the real web server, from Debian's Dovecot started by the test
(tests/transfer/test_imap_import.py's): the form queues a job, a worker runs
it (here the task, run as the worker runs it), the page shows its progress and
its end, and a client of OUR IMAP listener then sees the messages with their
flags and dates, each once however often the import runs. Wrong passwords,
unreachable hosts and TLS failures are shown on the page; a queued job can be
cancelled; a job whose worker died is marked interrupted and resumed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from apps.directory.models import User
from apps.store.models import Message
from apps.transfer import importing, jobs
from apps.transfer.models import ImportJob
from apps.transfer.tasks import run_import_job
from bench.common import Dovecot
from tests.conftest import ServerThread, sign_in
from tests.delivery.conftest import closed_port
from tests.factories import PASSWORD, make_mailbox
from tests.transfer import test_imap_import
from tests.transfer.test_imap_import import REMOTE_PASSWORD, REMOTE_USER, seen_over_imap
from tests.webadmin.directory.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow


# Dovecot holding test_imap_import.FILLING: three folders, with flags and
# internal dates (its fixture; this module gets a Dovecot of its own).
dovecot = test_imap_import.dovecot


def fill_imap_form(page: Page, port: int, *, password: str = REMOTE_PASSWORD,
                   security: str = "none") -> None:
    form = page.get_by_role("form", name="Import from IMAP server")
    form.get_by_label("IMAP server").fill("127.0.0.1")
    form.get_by_label("Port").fill(str(port))
    form.get_by_label("Security").select_option(security)
    form.get_by_label("User name").fill(REMOTE_USER)
    form.get_by_label("Remote password").fill(password)
    form.get_by_role("button", name="Import from IMAP server").click()


def newest_job() -> ImportJob:
    return ImportJob.objects.order_by("-pk").first()


def test_an_imap_account_imported_from_the_panel(
        web_server, page: Page, dovecot: Dovecot, mail_servers: ServerThread) -> None:
    User.objects.create_superuser("root@admin.example", ADMIN_PASSWORD)
    eve = make_mailbox("eve@ours.example")
    remote = seen_over_imap(dovecot.port, REMOTE_USER, REMOTE_PASSWORD)
    sign_in(page, web_server.url, "root@admin.example", ADMIN_PASSWORD)
    page.goto(f"{web_server.url}/manage/mailboxes/{eve.pk}/")

    fill_imap_form(page, dovecot.port)
    source = f"imap://{REMOTE_USER}@127.0.0.1:{dovecot.port}"
    expect(page.get_by_role("status")).to_contain_text(f"Import from {source} queued.")
    job_card = page.locator("article.import-job").first
    expect(job_card).to_contain_text(f"{source} → every folder")
    expect(job_card).to_contain_text("Waiting for a worker: 0 of 0 messages")
    job = newest_job()
    # The password is kept encrypted only, and only until the job ends.
    assert job.imap_secret and REMOTE_PASSWORD not in job.imap_secret

    run_import_job(job.pk)
    expect(job_card).to_contain_text("Done: 5 of 5 messages")
    expect(job_card).to_contain_text("5 imported, 0 there already")
    expect(job_card).to_contain_text("/s)")  # the rate
    expect(job_card.get_by_role("button", name="Cancel import")).to_have_count(0)
    job.refresh_from_db()
    assert job.imap_secret == ""
    assert seen_over_imap(mail_servers.port("imap"), eve.address, PASSWORD) == remote

    # Started again: nothing is copied twice.
    fill_imap_form(page, dovecot.port)
    expect(page.locator("article.import-job")).to_have_count(2)
    run_import_job(newest_job().pk)
    expect(page.locator("article.import-job").first).to_contain_text(
        "Done: 5 of 5 messages")
    expect(page.locator("article.import-job").first).to_contain_text(
        "0 imported, 5 there already")
    assert seen_over_imap(mail_servers.port("imap"), eve.address, PASSWORD) == remote

    # Why a job failed, on the page; the password is wiped all the same.
    latest = page.locator("article.import-job").first
    nowhere = closed_port()
    for port, password, security, reason in [
            (dovecot.port, "not the password", "none",
             f"refused the login of {REMOTE_USER} (wrong user name or password?)"),
            (nowhere, REMOTE_PASSWORD, "none",
             f"cannot connect to 127.0.0.1:{nowhere}: Connection refused"),
            (dovecot.port, REMOTE_PASSWORD, "ssl", f"TLS with 127.0.0.1:{dovecot.port} failed"),
    ]:
        fill_imap_form(page, port, password=password, security=security)
        expect(latest).to_contain_text("Waiting for a worker")
        run_import_job(newest_job().pk)
        expect(latest).to_contain_text("Failed: 0 of 0 messages")
        expect(latest).to_contain_text(reason)
        assert newest_job().imap_secret == ""

    fill_imap_form(page, dovecot.port)
    expect(latest).to_contain_text("Waiting for a worker")
    latest.get_by_role("button", name="Cancel import").click()
    expect(page.get_by_role("status")).to_contain_text("cancelled.")
    expect(latest).to_contain_text("Cancelled: 0 of 0 messages")
    run_import_job(newest_job().pk)  # the task still comes: it does nothing
    assert newest_job().status == "cancelled" and newest_job().imap_secret == ""
    assert Message.objects.filter(folder__mailbox=eve).count() == 5

    # A job whose worker died an hour ago: shown interrupted, and resumed.
    ivy = make_mailbox("ivy@ours.example")
    page.goto(f"{web_server.url}/manage/mailboxes/{ivy.pk}/")
    fill_imap_form(page, dovecot.port)
    expect(page.get_by_role("status")).to_contain_text("queued.")
    job = newest_job()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importing, "_file_batch", worker_killed_after_one_batch())
        with pytest.raises(WorkerKilled):
            run_import_job(job.pk)
    ImportJob.objects.filter(pk=job.pk).update(heartbeat=timezone.now() - timedelta(hours=1))
    page.reload()
    card = page.locator("article.import-job").first
    expect(card).to_contain_text("Interrupted:")
    expect(card).to_contain_text("resume to copy what is missing")
    card.get_by_role("button", name="Resume import").click()
    expect(page.get_by_role("status")).to_contain_text(f"Import from {source} resumed.")
    run_import_job(job.pk)
    expect(card).to_contain_text("Done: 5 of 5 messages")
    assert seen_over_imap(mail_servers.port("imap"), ivy.address, PASSWORD) == remote


class WorkerKilled(BaseException):
    """What SIGKILL does to a worker, as far as the database can tell: the
    run stops where it is, nothing after it runs."""


def worker_killed_after_one_batch() -> Callable[..., None]:
    """importing._file_batch, in a worker killed once it has filed one batch."""
    file_batch = importing._file_batch
    filed_batches = []

    def dies_after_one_batch(*args, **kwargs) -> None:
        if filed_batches:
            raise WorkerKilled
        file_batch(*args, **kwargs)
        filed_batches.append(1)
    return dies_after_one_batch


def test_a_job_whose_worker_died_is_marked_interrupted_and_resumed(
        db, dovecot: Dovecot, monkeypatch, django_capture_on_commit_callbacks) -> None:
    gus = make_mailbox("gus@ours.example")
    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.start_imap_import(gus, host="127.0.0.1", port=dovecot.port, tls="none",
                                     user=REMOTE_USER, password=REMOTE_PASSWORD)
    monkeypatch.setattr(importing, "_file_batch", worker_killed_after_one_batch())
    with pytest.raises(WorkerKilled):
        run_import_job(job.pk)
    monkeypatch.undo()
    job.refresh_from_db()
    filed = Message.objects.filter(folder__mailbox=gus).count()
    assert 0 < filed < 5
    assert job.status == "running" and job.copied == filed  # its last progress
    assert job.current_folder in test_imap_import.FILLING  # where it was reading

    assert jobs.latest_jobs(gus)[0].status == "running"  # not stale yet
    later = timezone.now() + timedelta(hours=1)
    (interrupted,) = jobs.latest_jobs(gus, now=later)
    assert interrupted.status == "interrupted" and "resume" in interrupted.detail
    assert interrupted.imap_secret  # kept, for the resumed run
    run_import_job(job.pk)  # a late delivery of the old task does not run it
    assert ImportJob.objects.get(pk=job.pk).status == "interrupted"

    with django_capture_on_commit_callbacks() as queued:
        assert jobs.resume(interrupted)
    assert len(queued) == 1  # the task, enqueued once the job is queued again
    run_import_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.messages_done, job.copied, job.skipped) == (
        "done", 5, 5 - filed, filed)
    assert job.imap_secret == ""
    assert Message.objects.filter(folder__mailbox=gus).count() == 5
