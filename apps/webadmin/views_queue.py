"""The outbound queue: what waits, why, and the postmaster's actions on it
(retry now, bounce now, delete), each through apps/delivery's services."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from apps.delivery import services as delivery
from apps.delivery.models import OutboundMessage, QueueEntry
from apps.directory.models import User
from apps.web.auth import admin_required
from apps.webadmin.scope import managed_domains

PAGE_SIZE = 50


class QueueFilterForm(forms.Form):
    address = forms.CharField(label="Address", required=False, max_length=320,
                              help_text="Sender or recipient, or part of one.")
    status = forms.ChoiceField(label="Status", required=False, choices=[
        ("", "Any"), ("waiting", "Not tried yet"), ("deferred", "Deferred"),
        ("active", "Being delivered")])


def queued_for(user: User) -> QuerySet[OutboundMessage]:
    """Queued messages the administrator may see: a domain administrator's
    are those sent from their domains."""
    domains = managed_domains(user)
    queued = OutboundMessage.objects.all()
    return queued if domains is None else queued.filter(delivery.sent_from(domains))


def _entries(**criteria: object) -> Exists:
    return Exists(QueueEntry.objects.filter(message=OuterRef("pk"), **criteria))


@admin_required
def queue_list(request: HttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET or None)
    queued = queued_for(request.user)
    if form.is_valid():
        address, status = form.cleaned_data["address"], form.cleaned_data["status"]
        if address:
            queued = queued.filter(Q(sender__icontains=address)
                                   | _entries(recipient__icontains=address))
        if status == "waiting":
            queued = queued.filter(_entries(attempts=0))
        elif status == "deferred":
            queued = queued.filter(_entries(attempts__gt=0))
        elif status == "active":
            queued = queued.filter(_entries(claimed_until__gt=timezone.now()))
    queued = queued.select_related("blob").prefetch_related(
        Prefetch("entries", queryset=QueueEntry.objects.order_by("pk"))).order_by("arrival", "pk")
    page = Paginator(queued, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "webadmin/queue_list.html", {
        "section": "queue", "form": form, "page": page, "query": query.urlencode(),
        "now": timezone.now()}, status=200 if not form.errors else 400)


@admin_required
def queue_message(request: HttpRequest, queue_id: str) -> HttpResponse:
    message = get_object_or_404(queued_for(request.user).select_related("blob"),
                                queue_id=queue_id)
    return render(request, "webadmin/queue_message.html", {
        "section": "queue", "message": message,
        "entries": message.entries.order_by("pk"), "now": timezone.now(),
        "headers": delivery.stored_headers(message)})


@require_POST
@admin_required
def queue_action(request: HttpRequest, queue_id: str, action: str) -> HttpResponse:
    message = get_object_or_404(queued_for(request.user), queue_id=queue_id)
    if action == "retry":
        delivery.retry_now(message.queue_id)
        messages.success(request, f"{queue_id} will be tried again now.")
        return redirect("webadmin:queue_message", queue_id=queue_id)
    if action == "bounce":
        bounced = delivery.bounce_now(message.queue_id)
        messages.success(request, f"{queue_id}: {bounced} recipient{'s' if bounced != 1 else ''} "
                         "bounced, the sender is told.")
    else:
        delivery.delete_queued(message.queue_id)
        messages.success(request, f"{queue_id} deleted, without a report to the sender.")
    return redirect("webadmin:queue")
