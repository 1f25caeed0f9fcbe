"""The API's documentation page (Swagger UI, served from our static files)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

# The site's policy, except that Swagger UI needs the <style> element of
# drf-spectacular's page and sets style attributes itself; scripts stay 'self'
# (the split view serves its start-up script as a file, not inline).
DOCS_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])


class ApiDocsView(SpectacularSwaggerSplitView):
    @extend_schema(exclude=True)  # a page about the API, not part of it
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_POLICY
        return response
