"""The client autoconfiguration formats, each rendered from one
``ClientSettings`` (apps/directory/clientconfig.py): pure functions, no I/O.

- Thunderbird's autoconfig (config-v1.1.xml, the format of
  https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat);
- Outlook's Autodiscover, the "POX" XML request and response of [MS-OXDSCLI]
  and the JSON v2 redirect to it;
- an Apple configuration profile (.mobileconfig) with a com.apple.mail.managed
  payload (Apple's "Configuration Profile Reference", Mail).
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET  # building only: requests are parsed by defusedxml

import defusedxml.ElementTree

from apps.directory.clientconfig import ClientSettings, Server

# Thunderbird's socketType and the security our servers use.
_THUNDERBIRD_SOCKET = {"ssl": "SSL", "starttls": "STARTTLS"}

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a")
MOBILECONFIG_CONTENT_TYPE = "application/x-apple-aspen-config"


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, tag: str, text: str | int) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(text)
    return element


def thunderbird_config(client: ClientSettings) -> bytes:
    """config-v1.1.xml; the user name is Thunderbird's %EMAILADDRESS%
    placeholder, filled in with the address being set up."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=client.domain)
    _text(provider, "domain", client.domain)
    _text(provider, "displayName", client.domain)
    _text(provider, "displayShortName", client.domain)
    for tag, servers in (("incomingServer", client.incoming), ("outgoingServer", client.outgoing)):
        for server in servers:
            element = ET.SubElement(provider, tag, type=server.protocol)
            _text(element, "hostname", server.hostname)
            _text(element, "port", server.port)
            _text(element, "socketType", _THUNDERBIRD_SOCKET[server.security])
            _text(element, "username", "%EMAILADDRESS%")
            # Our servers take the password over TLS (SASL PLAIN / LOGIN).
            _text(element, "authentication", "password-cleartext")
    return _xml(root)


def autodiscover_request_address(body: bytes) -> str | None:
    """The EMailAddress of an Autodiscover POX request, or None when the body
    is not one (malformed XML, entities, no address)."""
    try:
        root = defusedxml.ElementTree.fromstring(body)
    except (ET.ParseError, defusedxml.DefusedXmlException):
        return None
    element = root.find(f"{{{AUTODISCOVER_REQUEST_NS}}}Request/"
                        f"{{{AUTODISCOVER_REQUEST_NS}}}EMailAddress")
    if element is None or not (element.text or "").strip():
        return None
    return element.text.strip()


def _autodiscover_protocol(account: ET.Element, server: Server, login: str) -> None:
    protocol = ET.SubElement(account, "Protocol")
    _text(protocol, "Type", server.protocol.upper())
    _text(protocol, "Server", server.hostname)
    _text(protocol, "Port", server.port)
    _text(protocol, "DomainRequired", "off")
    _text(protocol, "LoginName", login)
    _text(protocol, "SPA", "off")
    _text(protocol, "SSL", "on")
    if server.security == "starttls":
        # [MS-OXDSCLI]: Encryption overrides SSL; "TLS" asks for STARTTLS.
        _text(protocol, "Encryption", "TLS")
    _text(protocol, "AuthRequired", "on")
    if server.protocol == "smtp":
        _text(protocol, "UsePOPAuth", "on")
        _text(protocol, "SMTPLast", "off")


def autodiscover_response(client: ClientSettings) -> bytes:
    """The POX response for an IMAP account: the preferred IMAP and SMTP
    servers and POP3, each with the full address as LoginName."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    # One server per protocol: Outlook takes the first of each type.
    chosen: dict[str, Server] = {}
    for server in (*client.incoming, *client.outgoing):
        chosen.setdefault(server.protocol, server)
    for server in chosen.values():
        _autodiscover_protocol(account, server, client.address)
    return _xml(root)


def autodiscover_json(domain: str, protocol: str) -> dict[str, str]:
    """Autodiscover v2's answer for the POX protocol: where to POST."""
    return {"Protocol": protocol,
            "Url": f"https://autodiscover.{domain}/autodiscover/autodiscover.xml"}


def mobileconfig(client: ClientSettings) -> bytes:
    """An unsigned configuration profile for the IMAP account of
    ``client.address``. Identifiers derive from the address, so that
    installing a new download replaces the old profile."""
    address, imap = client.address, client.imap
    smtp = client.outgoing[0]
    reverse = ".".join(reversed(client.domain.split(".")))
    identifier = f"{reverse}.mailhost.{uuid.uuid5(uuid.NAMESPACE_URL, f'mailto:{address}')}"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{address}#mail")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": imap.hostname,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": imap.security == "ssl",
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": smtp.hostname,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": smtp.security == "ssl",
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{address}")).upper(),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"The mail account {address} ({client.domain})",
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)
