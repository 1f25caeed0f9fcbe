from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.web.auth import mailbox_required


@mailbox_required
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "webmail/index.html")
