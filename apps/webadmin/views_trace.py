"""The message trace: "where did my mail go?" (apps/store/trace.py records)."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from apps.store import trace
from apps.web.auth import admin_required
from apps.webadmin.scope import managed_domains


class TraceSearchForm(forms.Form):
    address = forms.CharField(label="Address", required=False, max_length=320,
                              help_text="A sender or recipient, or part of one.")
    message_id = forms.CharField(label="Message-ID", required=False, max_length=255)
    queue_id = forms.CharField(label="Queue ID", required=False, max_length=32)
    since = forms.DateTimeField(label="From (UTC)", required=False,
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(label="Until (UTC)", required=False,
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and until <= since:
            self.add_error("until", "Until must be after From.")
        return data


@admin_required
def message_trace(request: HttpRequest) -> HttpResponse:
    form = TraceSearchForm(request.GET or None)
    timelines: list[trace.Timeline] = []
    window_default = False
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        status = 200
        criteria = form.cleaned_data if form.is_bound else {}
        criteria = {name: value for name, value in criteria.items() if value}
        if not criteria:
            # Nothing asked: the last day, newest first, not the whole table.
            criteria = {"since": timezone.now() - timedelta(days=1)}
            window_default = True
        timelines = trace.search(**criteria, domains=managed_domains(request.user))
    return render(request, "webadmin/message_trace.html", {
        "section": "trace", "form": form, "timelines": timelines,
        "window_default": window_default}, status=status)
