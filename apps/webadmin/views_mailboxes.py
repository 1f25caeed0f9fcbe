"""Mailboxes in the admin panel: list (per domain, search, filters, usage
bars), create, edit, new password, delete, CSV import and export. Each
mailbox is looked up through apps/directory/access.py."""

from __future__ import annotations

import csv
from dataclasses import asdict

from django.contrib import messages
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from apps.directory import second_factor, services
from apps.directory.access import mailboxes_for, may_manage_address
from apps.directory.audit import Actor
from apps.directory.models import Mailbox
from apps.pop3 import services as pop3
from apps.pop3.models import MailboxOptions
from apps.store.services import usage_expression
from apps.transfer import jobs
from apps.transfer.models import ImportJob
from apps.web.auth import admin_required
from apps.webadmin.directory_forms import (
    CsvImportForm,
    ImapImportForm,
    MailboxCreateForm,
    MailboxEditForm,
    MailImportForm,
    PasswordForm,
    lines,
    show_error,
)
from apps.webadmin.mailbox_csv import export_rows, import_mailboxes
from apps.webadmin.paging import paginate, search_text
from mailhost.errors import MailhostError

# A mailbox is "nearly full" from this share of its quota on.
NEARLY_FULL = 0.9


def _with_usage(mailboxes: QuerySet[Mailbox]) -> QuerySet[Mailbox]:
    return mailboxes.select_related("domain", "user").annotate(
        used_bytes=usage_expression("mailbox"))


def _filtered(request: HttpRequest) -> tuple[QuerySet[Mailbox], dict[str, str]]:
    """The mailboxes the list's filters pick, and the filters as given."""
    filters = {name: search_text(request, name)
               for name in ("q", "domain", "status", "usage")}
    mailboxes = mailboxes_for(request.user)
    if filters["q"]:
        mailboxes = mailboxes.filter(address__contains=filters["q"])
    if filters["domain"]:
        mailboxes = mailboxes.filter(domain__name=filters["domain"])
    if filters["status"] in ("active", "disabled"):
        mailboxes = mailboxes.filter(active=filters["status"] == "active")
    if filters["usage"] == "high":
        mailboxes = mailboxes.annotate(used_bytes=usage_expression("mailbox")).filter(
            quota__gt=0, used_bytes__gte=F("quota") * NEARLY_FULL)
    return mailboxes, filters


def _mailbox(request: HttpRequest, pk: int) -> Mailbox:
    return get_object_or_404(_with_usage(mailboxes_for(request.user)), pk=pk)


@admin_required
def mailbox_list(request: HttpRequest) -> HttpResponse:
    mailboxes, filters = _filtered(request)
    page = paginate(request, mailboxes, rows=_with_usage)
    for mailbox in page.rows:
        mailbox.high = bool(mailbox.quota) and mailbox.used_bytes >= mailbox.quota * NEARLY_FULL
        mailbox.nearly = mailbox.quota * NEARLY_FULL
    return render(request, "webadmin/directory/mailbox_list.html", {
        "section": "mailboxes", "page": page, "filters": filters,
        "export_query": request.GET.urlencode()})


@sensitive_post_parameters("password")
@admin_required
def mailbox_create(request: HttpRequest) -> HttpResponse:
    domain = search_text(request, "domain")
    form = MailboxCreateForm(request.POST or None,
                             initial={"address": f"@{domain}" if domain else ""})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if not may_manage_address(request.user, data["address"]):
            form.add_error("address", "You do not administer this address's domain.")
        else:
            try:
                mailbox = services.create_mailbox(
                    data["address"], data["password"], quota=data["quota"],
                    display_name=data["display_name"], actor=Actor.of(request))
            except MailhostError as error:
                show_error(form, error)
            else:
                messages.success(request, f"Mailbox {mailbox.address} created.")
                return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
    return render(request, "webadmin/directory/mailbox_create.html", {
        "section": "mailboxes", "form": form}, status=400 if form.errors else 200)


@admin_required
def mailbox_edit(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    leave_copy = MailboxOptions.objects.filter(mailbox=mailbox, leave_copy=True).exists()
    form = MailboxEditForm(request.POST or None, initial={
        "display_name": mailbox.user.display_name, "quota": mailbox.quota,
        "active": mailbox.active, "forward_to": "\n".join(mailbox.forward_to),
        "forward_keep_copy": mailbox.forward_keep_copy, "leave_copy": leave_copy,
        "spam_threshold": mailbox.spam_threshold})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():  # one change: the mailbox and its POP3 option
                services.update_mailbox(
                    mailbox, display_name=data["display_name"], quota=data["quota"],
                    active=data["active"], forward_to=lines(data["forward_to"]),
                    forward_keep_copy=data["forward_keep_copy"],
                    spam_threshold=data["spam_threshold"], actor=Actor.of(request))
                pop3.set_leave_copy(mailbox, data["leave_copy"], actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Mailbox {mailbox.address} saved.")
            return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
    return render(request, "webadmin/directory/mailbox_edit.html", {
        "section": "mailboxes", "mailbox": mailbox, "form": form,
        "password_form": PasswordForm(), "import_form": MailImportForm(),
        "two_factor": second_factor.is_enrolled(mailbox.user),
        "imap_import_form": ImapImportForm(), **_import_jobs(mailbox)},
        status=400 if form.errors else 200)


@admin_required
@require_POST
def mailbox_reset_second_factor(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    second_factor.reset(mailbox.user, actor=Actor.of(request))
    messages.success(request, f"Two-factor sign-in of {mailbox.address} is off; they can set "
                              "it up again.")
    return redirect("webadmin:mailbox_edit", pk=mailbox.pk)


@sensitive_post_parameters("password")
@admin_required
def mailbox_password(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    form = PasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.set_password(mailbox.user, form.cleaned_data["password"],
                                  actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"New password set for {mailbox.address}.")
            return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
    return render(request, "webadmin/directory/mailbox_password.html", {
        "section": "mailboxes", "mailbox": mailbox, "form": form},
        status=400 if form.errors else 200)


@admin_required
def mailbox_delete(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    if request.method == "POST":
        services.delete_mailbox(mailbox, actor=Actor.of(request))
        messages.success(request, f"Mailbox {mailbox.address} deleted.")
        return redirect(f"{reverse('webadmin:mailbox_list')}?domain={mailbox.domain.name}")
    return render(request, "webadmin/directory/mailbox_delete.html", {
        "section": "mailboxes", "mailbox": mailbox})


class _Echo:
    """csv.writer's file: hands each line back to the streaming response."""

    def write(self, value: str) -> str:
        return value


@admin_required
def mailbox_export(request: HttpRequest) -> StreamingHttpResponse:
    mailboxes, _ = _filtered(request)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in export_rows(_with_usage(mailboxes))),
        content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="mailboxes.csv"'
    return response


@sensitive_post_parameters("csv", "file")
@admin_required
def mailbox_import(request: HttpRequest) -> HttpResponse:
    """Without JavaScript: the whole file in one POST, then the report. With
    static/webadmin/csv_import.js: the file in parts (``csv`` text and the
    number of its first line), each answered in JSON, so the page shows the
    progress and the failed rows as they come."""
    if request.method == "POST" and "csv" in request.POST:
        try:
            first_line = max(1, int(request.POST.get("first_line", "1")))
        except ValueError:
            first_line = 1
        results = import_mailboxes(request.POST["csv"], user=request.user,
                                   actor=Actor.of(request), first_line=first_line)
        return JsonResponse({"results": [asdict(result) for result in results]})
    form = CsvImportForm(request.POST or None, request.FILES or None)
    results = None
    if request.method == "POST" and form.is_valid():
        try:
            text = form.cleaned_data["file"].read().decode("utf-8-sig")
        except UnicodeDecodeError:
            form.add_error("file", "The file is not UTF-8 text.")
        else:
            results = import_mailboxes(text, user=request.user, actor=Actor.of(request))
    failed = [result for result in results or [] if not result.ok]
    return render(request, "webadmin/directory/mailbox_import.html", {
        "section": "mailboxes", "form": form, "results": results, "failed": failed,
        "created": len(results or []) - len(failed),
    }, status=400 if form.errors else 200)



# --- mail import (apps/transfer/jobs.py) -----------------------------------------


def _import_jobs(mailbox: Mailbox) -> dict[str, object]:
    """The latest import jobs, and whether the page should keep polling."""
    latest = jobs.latest_jobs(mailbox)
    return {"import_jobs": latest, "import_running": any(job.active for job in latest)}


@admin_required
def mailbox_import_mail(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload an mbox; a worker imports it and the mailbox page shows how far."""
    mailbox = _mailbox(request, pk)
    form = MailImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            jobs.start_mbox_import(mailbox, upload, name=upload.name,
                                   folder=form.cleaned_data["folder"])
        except MailhostError as error:
            show_error(form, error, fields={"name": "folder"})
        else:
            messages.success(request, f"Import of {upload.name} queued.")
            return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
    return render(request, "webadmin/directory/mailbox_import_mail.html", {
        "section": "mailboxes", "mailbox": mailbox, "form": form,
    }, status=400 if form.errors else 200)


@admin_required
def mailbox_import_jobs(request: HttpRequest, pk: int) -> HttpResponse:
    """The import jobs' progress, which the mailbox page polls while one runs."""
    mailbox = _mailbox(request, pk)
    return render(request, "webadmin/directory/_import_jobs.html", {
        "mailbox": mailbox, **_import_jobs(mailbox)})


@sensitive_post_parameters("password")
@admin_required
def mailbox_import_imap(request: HttpRequest, pk: int) -> HttpResponse:
    """Import every folder of a remote IMAP account; the mailbox page shows how far."""
    mailbox = _mailbox(request, pk)
    form = ImapImportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = jobs.start_imap_import(
                mailbox, host=data["host"], port=data["port"], tls=data["tls"],
                user=data["user"], password=data["password"],
                verify_certificate=data["verify_certificate"])
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Import from {job.source} queued.")
            return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
    return render(request, "webadmin/directory/mailbox_import_mail.html", {
        "section": "mailboxes", "mailbox": mailbox, "imap_import_form": form,
    }, status=400 if form.errors else 200)


@admin_required
@require_POST
def mailbox_import_job_action(request: HttpRequest, pk: int, job_pk: int) -> HttpResponse:
    """Cancel a job, or resume an interrupted one."""
    mailbox = _mailbox(request, pk)
    job = get_object_or_404(ImportJob, pk=job_pk, mailbox=mailbox)
    if request.POST.get("action") == "resume":
        if jobs.resume(job):
            messages.success(request, f"Import from {job.source} resumed.")
    elif jobs.cancel(job):
        messages.success(request, f"Import from {job.source} cancelled.")
    return redirect("webadmin:mailbox_edit", pk=mailbox.pk)
