"""Security headers on every web answer (DESIGN.md "The web side")."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.certificates import challenges

# No inline script and no remote anything: scripts, styles, images and frames
# come from our own origin (vendored under static/). A view that serves
# untrusted content (a message's HTML) sets a stricter policy of its own.
DEFAULT_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = DEFAULT_POLICY
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response


# RFC 8555 §8.3: the token is base64url.
_CHALLENGE_PATH = re.compile(r"/\.well-known/acme-challenge/([A-Za-z0-9_-]+)")


class AcmeChallengeMiddleware:
    """Answers the CA's http-01 requests (RFC 8555 §8.3) for whatever name it
    validates (mta-sts.<domain>, autoconfig.<domain>), before Django checks
    the Host header against ALLOWED_HOSTS; any other request goes on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = _CHALLENGE_PATH.fullmatch(request.path_info)
        if match is None:
            return self.get_response(request)
        answer = challenges.key_authorization(match.group(1))
        if answer is None:
            return HttpResponse("no such challenge\n", status=404, content_type="text/plain")
        return HttpResponse(answer, content_type="application/octet-stream")
