"""What mail programs and other mail servers fetch over HTTP without signing
in: Thunderbird's autoconfig, Outlook's Autodiscover (POX and JSON v2) and the
MTA-STS policy. Each answers for hosted, active domains only; any other gets
404, never a configuration naming our servers."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.directory.clientconfig import ClientSettings, client_settings, serves
from apps.directory.dns import mta_sts_policy
from apps.web import autoconfig

_XML = "application/xml; charset=utf-8"


def _service_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Marks a view that ServiceHostMiddleware may call for a hosted domain's
    autoconfig./autodiscover./mta-sts. name."""
    view.serves_service_hosts = True  # type: ignore[attr-defined]
    return view


def _host_domain(request: HttpRequest, prefix: str) -> str:
    """The domain of a ``<prefix>.<domain>`` Host, or "" for another host."""
    host = (getattr(request, "service_host", "")
            or request.get_host().rsplit(":", 1)[0].lower().rstrip("."))
    return host.removeprefix(prefix) if host.startswith(prefix) else ""


def _settings_or_404(address_or_domain: str) -> ClientSettings:
    client = client_settings(address_or_domain)
    if client is None:
        raise Http404("not a domain hosted here")
    return client


@_service_view
@require_GET
def thunderbird(request: HttpRequest) -> HttpResponse:
    """/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=… (on the
    domain's own host) and /mail/config-v1.1.xml on autoconfig.<domain>,
    where the address may be missing: the host names the domain then."""
    wanted = request.GET.get("emailaddress", "") or _host_domain(request, "autoconfig.")
    client = _settings_or_404(wanted)
    return HttpResponse(autoconfig.thunderbird_config(client), content_type=_XML)


@_service_view
@csrf_exempt  # a mail program posts here, with no session or token
@require_POST
def autodiscover_xml(request: HttpRequest) -> HttpResponse:
    """Outlook's POX Autodiscover: POST /autodiscover/autodiscover.xml."""
    address = autoconfig.autodiscover_request_address(request.body)
    if address is None or "@" not in address:
        return HttpResponse("An Autodiscover request with an EMailAddress is expected.\n",
                            status=400, content_type="text/plain; charset=utf-8")
    client = _settings_or_404(address)
    return HttpResponse(autoconfig.autodiscover_response(client), content_type=_XML)


@_service_view
@require_GET
def autodiscover_json(request: HttpRequest, address: str = "") -> HttpResponse:
    """Autodiscover v2: /autodiscover/autodiscover.json?Email=…&Protocol=… (or
    …/autodiscover.json/v1.0/<address>?Protocol=…). Only the POX protocol is
    served here (no Exchange Web Services, no ActiveSync)."""
    address = address or request.GET.get("Email", "")
    protocol = request.GET.get("Protocol", "")
    if "@" not in address:
        raise Http404("not an address")
    client = _settings_or_404(address)
    if protocol.lower() != "autodiscoverv1":
        return JsonResponse({"ErrorCode": "ProtocolNotSupported",
                             "ErrorMessage": f"The given protocol value '{protocol}' is invalid."
                                             " Supported values are 'AutodiscoverV1'."},
                            status=400)
    return JsonResponse(autoconfig.autodiscover_json(client.domain, "AutodiscoverV1"))


@_service_view
@require_GET
def mta_sts(request: HttpRequest) -> HttpResponse:
    """RFC 8461 §3.2: the policy at https://mta-sts.<domain>/.well-known/mta-sts.txt,
    text/plain, for each hosted, active domain."""
    domain = _host_domain(request, "mta-sts.")
    if not domain or not serves(domain):
        raise Http404("no MTA-STS policy here")
    return HttpResponse(mta_sts_policy(mail_host=settings.MAILHOST_HOSTNAME),
                        content_type="text/plain; charset=utf-8")
