"""Client autoconfiguration as the mail programs read it: Thunderbird's
config-v1.1.xml, Outlook's Autodiscover (POX and JSON v2) and the Apple
profile, for hosted domains only, with the public names and standard ports."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.delivery.mtasts import Policy, parse_policy, parse_sts_record
from apps.directory import services as directory
from apps.directory.dns import dns_records
from apps.web.autoconfig import autodiscover_request_address
from tests.factories import make_mailbox

PUBLIC_HOST = "mail.public.example"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@pytest.fixture(autouse=True)
def _public_names(settings):
    settings.MAILHOST_PUBLIC_HOSTNAME = PUBLIC_HOST
    # The listeners bind developer ports; clients are told the standard ones.
    settings.MAILHOST_PORTS = {**settings.MAILHOST_PORTS, "imaps": 1993, "smtps": 2465}
    settings.ALLOWED_HOSTS = ["testserver", ".ours.example", ".stranger.example"]


# What Thunderbird's readFromXML accepts (comm-central mailnews/base/prefs/
# content/accountcreation/readFromXML.sys.mjs): the values it knows.
THUNDERBIRD_SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
THUNDERBIRD_AUTH = {"password-cleartext", "plain", "password-encrypted", "secure",
                    "GSSAPI", "NTLM", "OAuth2", "client-IP-address", "TLS-client-cert", "none"}


def thunderbird_servers(body: bytes, domain: str) -> list[dict[str, str]]:
    root = ET.fromstring(body)  # noqa: S314 - our own answer
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == domain
    assert [d.text for d in provider.findall("domain")] == [domain]
    servers = []
    for element in provider:
        if element.tag not in ("incomingServer", "outgoingServer"):
            continue
        server = {"kind": element.tag, "type": element.get("type")}
        for field in ("hostname", "port", "socketType", "username", "authentication"):
            server[field] = element.findtext(field)
        assert 0 < int(server["port"]) < 65536
        assert server["socketType"] in THUNDERBIRD_SOCKET_TYPES
        assert server["authentication"] in THUNDERBIRD_AUTH
        servers.append(server)
    return servers


def test_thunderbird_autoconfig_names_the_public_host_and_standard_ports(client: Client, alice):
    response = client.get("/.well-known/autoconfig/mail/config-v1.1.xml",
                          {"emailaddress": "alice@ours.example"}, HTTP_HOST="ours.example")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/xml")
    servers = thunderbird_servers(response.content, "ours.example")
    incoming = [s for s in servers if s["kind"] == "incomingServer"]
    outgoing = [s for s in servers if s["kind"] == "outgoingServer"]
    # Implicit TLS first (RFC 8314): Thunderbird takes the first it can reach.
    assert incoming[0] == {"kind": "incomingServer", "type": "imap", "hostname": PUBLIC_HOST,
                           "port": "993", "socketType": "SSL", "username": "%EMAILADDRESS%",
                           "authentication": "password-cleartext"}
    assert [(s["type"], s["port"], s["socketType"]) for s in incoming] == [
        ("imap", "993", "SSL"), ("imap", "143", "STARTTLS"), ("pop3", "995", "SSL")]
    assert [(s["type"], s["hostname"], s["port"], s["socketType"], s["username"])
            for s in outgoing] == [
        ("smtp", PUBLIC_HOST, "465", "SSL", "%EMAILADDRESS%"),
        ("smtp", PUBLIC_HOST, "587", "STARTTLS", "%EMAILADDRESS%")]


def test_thunderbird_on_the_autoconfig_host_and_unknown_domains(client: Client, ours):
    # autoconfig.<domain>/mail/config-v1.1.xml, with or without the address.
    response = client.get("/mail/config-v1.1.xml", HTTP_HOST="autoconfig.ours.example")
    assert response.status_code == 200
    assert thunderbird_servers(response.content, "ours.example")[0]["hostname"] == PUBLIC_HOST
    response = client.get("/mail/config-v1.1.xml", {"emailaddress": "Bob@OURS.example"},
                          HTTP_HOST="autoconfig.ours.example")
    assert response.status_code == 200
    # A domain not hosted here, a disabled one, or nonsense: nothing about us.
    for address in ("eve@stranger.example", "no address", "a@b@c"):
        response = client.get("/.well-known/autoconfig/mail/config-v1.1.xml",
                              {"emailaddress": address})
        assert response.status_code == 404 and PUBLIC_HOST.encode() not in response.content
    assert client.get("/mail/config-v1.1.xml",
                      HTTP_HOST="autoconfig.stranger.example").status_code == 404
    directory.update_domain(ours, active=False)
    assert client.get("/mail/config-v1.1.xml",
                      HTTP_HOST="autoconfig.ours.example").status_code == 404


def autodiscover_request(address: str) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="{REQUEST_NS}">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema>
  </Request>
</Autodiscover>""".encode()


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml",
                                  "/Autodiscover/Autodiscover.xml"])
def test_outlook_autodiscover_pox(client: Client, alice, path):
    response = client.post(path, autodiscover_request("alice@ours.example"),
                           content_type="text/xml", HTTP_HOST="autodiscover.ours.example")
    assert response.status_code == 200
    root = ET.fromstring(response.content)  # noqa: S314 - our own answer
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    assert account is not None
    assert account.findtext(f"{{{OUTLOOK_NS}}}AccountType") == "email"
    assert account.findtext(f"{{{OUTLOOK_NS}}}Action") == "settings"
    protocols = {}
    for protocol in account.findall(f"{{{OUTLOOK_NS}}}Protocol"):
        fields = {child.tag.removeprefix(f"{{{OUTLOOK_NS}}}"): child.text for child in protocol}
        protocols[fields["Type"]] = fields
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    for kind, port in (("IMAP", "993"), ("POP3", "995"), ("SMTP", "465")):
        assert protocols[kind]["Server"] == PUBLIC_HOST
        assert protocols[kind]["Port"] == port
        assert protocols[kind]["SSL"] == "on"
        assert protocols[kind]["LoginName"] == "alice@ours.example"
        assert "Encryption" not in protocols[kind]  # implicit TLS, not STARTTLS


def test_outlook_autodiscover_refuses_strangers_and_bad_requests(client: Client, ours):
    url = "/autodiscover/autodiscover.xml"
    assert client.post(url, autodiscover_request("eve@stranger.example"),
                       content_type="text/xml").status_code == 404
    assert client.post(url, b"<not xml", content_type="text/xml").status_code == 400
    assert client.post(url, autodiscover_request(""), content_type="text/xml").status_code == 400
    # Entity expansion (a "billion laughs") is refused, not expanded.
    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "alice@ours.example">]>'
            b'<Autodiscover xmlns="' + REQUEST_NS.encode() + b'"><Request>'
            b'<EMailAddress>&e;</EMailAddress></Request></Autodiscover>')
    assert client.post(url, bomb, content_type="text/xml").status_code == 400
    assert client.get(url).status_code == 405


def test_autodiscover_v2_json(client: Client, alice):
    response = client.get("/autodiscover/autodiscover.json",
                          {"Email": "alice@ours.example", "Protocol": "AutodiscoverV1"})
    assert response.status_code == 200
    assert response.json() == {
        "Protocol": "AutodiscoverV1",
        "Url": "https://autodiscover.ours.example/autodiscover/autodiscover.xml"}
    response = client.get("/autodiscover/autodiscover.json/v1.0/alice@ours.example",
                          {"Protocol": "AutodiscoverV1"})
    assert response.json()["Protocol"] == "AutodiscoverV1"
    response = client.get("/autodiscover/autodiscover.json",
                          {"Email": "alice@ours.example", "Protocol": "ActiveSync"})
    assert response.status_code == 400 and response.json()["ErrorCode"] == "ProtocolNotSupported"
    assert client.get("/autodiscover/autodiscover.json",
                      {"Email": "eve@stranger.example",
                       "Protocol": "AutodiscoverV1"}).status_code == 404


def test_mobileconfig_is_a_profile_for_the_signed_in_user(client: Client, alice):
    url = "/mail/settings/mobileconfig/"
    response = client.get(url)
    assert response.status_code == 302 and "/signin/" in response["Location"]
    client.force_login(alice.user)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert "ours.example.mobileconfig" in response["Content-Disposition"]
    profile = plistlib.loads(response.content)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "alice@ours.example"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == (PUBLIC_HOST, 993, True)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == (PUBLIC_HOST, 465, True)
    assert mail["IncomingMailServerUsername"] == mail["OutgoingMailServerUsername"] == (
        "alice@ours.example")
    # Downloaded again: the same identifiers, so the new profile replaces the old.
    again = plistlib.loads(client.get(url).content)
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    other = make_mailbox("bob@ours.example")
    client.force_login(other.user)
    assert plistlib.loads(client.get(url).content)["PayloadUUID"] != profile["PayloadUUID"]


def test_mta_sts_policy_served_on_the_mta_sts_host(client: Client, settings, ours):
    settings.MAILHOST_HOSTNAME = "mx.public.example"
    response = client.get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.ours.example")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    # What a sending MTA reads (RFC 8461 §3.2), with our own parser for other domains.
    policy = parse_policy(response.content)
    assert policy == Policy("testing", 7 * 24 * 3600, ("mx.public.example", PUBLIC_HOST))
    assert response.content.startswith(b"version: STSv1\r\n")
    for host in ("mta-sts.stranger.example", "ours.example", "autoconfig.ours.example"):
        assert client.get("/.well-known/mta-sts.txt", HTTP_HOST=host).status_code == 404
    directory.update_domain(ours, active=False)
    assert client.get("/.well-known/mta-sts.txt",
                      HTTP_HOST="mta-sts.ours.example").status_code == 404


def test_the_mta_sts_id_changes_with_the_policy(settings, ours):
    def published_id() -> str:
        (record,) = [r for r in dns_records(ours, mail_host="mx.public.example")
                     if r.name == "_mta-sts.ours.example"]
        return parse_sts_record([record.value])

    first = published_id()
    assert published_id() == first
    settings.MAILHOST_MTA_STS_MODE = "enforce"
    assert published_id() != first


@hypothesis_settings(max_examples=80)
@given(st.binary(max_size=300))
def test_autodiscover_request_parser_takes_any_bytes(body):
    address = autodiscover_request_address(body)
    assert address is None or address.strip() == address != ""


@hypothesis_settings(max_examples=80)
# What XML 1.0 can carry, without spaces at the ends (strip() would take them).
@given(local=st.text(st.characters(codec="utf-8", exclude_categories=(
    "Cs", "Cn", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=20))
def test_autodiscover_request_parser_reads_back_any_address(local):
    address = f"{local}@ours.example"
    assert autodiscover_request_address(autodiscover_request(escape(address))) == address


@pytest.mark.django_db
def test_service_names_of_hosted_domains_need_no_allowed_hosts_entry(settings):
    # A new domain's autoconfig., autodiscover. and mta-sts. names answer as
    # soon as the domain exists, with ALLOWED_HOSTS naming only the panel's host.
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.MAILHOST_HOSTNAME = "mx.public.example"
    client = Client(raise_request_exception=False)  # an unknown Host is a 400 answer
    assert client.get("/.well-known/mta-sts.txt",
                      HTTP_HOST="mta-sts.fresh.example").status_code == 400
    directory.create_domain("fresh.example")
    make_mailbox("carol@fresh.example")
    policy = client.get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.fresh.example:443")
    assert policy.status_code == 200
    assert parse_policy(policy.content).mx == ("mx.public.example", PUBLIC_HOST)
    config = client.get("/mail/config-v1.1.xml", HTTP_HOST="autoconfig.fresh.example")
    assert config.status_code == 200
    assert thunderbird_servers(config.content, "fresh.example")
    request = (f'<Autodiscover xmlns="{REQUEST_NS}"><Request>'
               "<EMailAddress>carol@fresh.example</EMailAddress></Request></Autodiscover>")
    answer = client.post("/autodiscover/autodiscover.xml", request, content_type="text/xml",
                         HTTP_HOST="autodiscover.fresh.example")
    assert answer.status_code == 200 and b"carol@fresh.example" in answer.content


@pytest.mark.django_db
def test_service_names_serve_nothing_else_and_strangers_are_refused(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    fresh = directory.create_domain("fresh.example")
    client = Client(raise_request_exception=False)  # an unknown Host is a 400 answer
    # The panel, the webmail and the API are not served on a service name.
    for path in ("/signin/", "/admin/", "/api/v1/domains/", "/"):
        assert client.get(path, HTTP_HOST="autoconfig.fresh.example").status_code == 404
    # Names of domains not hosted here (or not service names) stay refused.
    for host in ("autoconfig.stranger.example", "www.fresh.example", "fresh.example"):
        assert client.get("/mail/config-v1.1.xml", HTTP_HOST=host).status_code == 400
    directory.update_domain(fresh, active=False)
    assert client.get("/.well-known/mta-sts.txt",
                      HTTP_HOST="mta-sts.fresh.example").status_code == 400
