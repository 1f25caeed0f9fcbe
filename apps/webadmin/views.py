from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.web.auth import admin_required


@admin_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "webadmin/dashboard.html", {"section": "dashboard"})
