"""Security headers on every web answer (DESIGN.md "The web side")."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, resolve

from apps.certificates import challenges
from apps.directory.clientconfig import serves

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


# The names that mail programs and other mail servers ask for each hosted
# domain: Thunderbird's autoconfig.<domain>, Outlook's autodiscover.<domain>,
# RFC 8461 §3.2's mta-sts.<domain>.
SERVICE_HOST_PREFIXES = ("autoconfig.", "autodiscover.", "mta-sts.")


def service_host(request: HttpRequest) -> str:
    """The Host name (lower case, no port) when it is a service name of a
    hosted, active domain that ALLOWED_HOSTS does not list; "" otherwise."""
    name, _ = split_domain_port(request.META.get("HTTP_HOST", ""))
    name = name.rstrip(".")
    prefix = next((p for p in SERVICE_HOST_PREFIXES if name.startswith(p)), None)
    if prefix is None or validate_host(name, settings.ALLOWED_HOSTS):
        return ""
    return name if serves(name.removeprefix(prefix)) else ""


class ServiceHostMiddleware:
    """Serves autoconfig, Autodiscover and the MTA-STS policy on the service
    names of every hosted domain, so that adding a domain needs no change to
    MAILHOST_ALLOWED_HOSTS. Such a name reaches those views only (anything
    else there is 404); any other Host goes on to Django's own check."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        host = service_host(request)
        if not host:
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            match = None
        if match is None or not getattr(match.func, "serves_service_hosts", False):
            return HttpResponseNotFound("not found\n", content_type="text/plain")
        request.service_host = host  # the views' name for the host, checked above
        return match.func(request, *match.args, **match.kwargs)
