"""The PROXY protocol (issue 16): the header parser over byte strings, and
the real listeners behind HAProxy (send-proxy, send-proxy-v2) seeing the
client's address, not the balancer's."""

from __future__ import annotations

import base64
import imaplib
import ipaddress
import poplib
import smtplib
import socket
import ssl
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.directory import app_passwords
from apps.directory.models import AppPassword
from apps.mailservers.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    looks_like_header,
    parse,
)
from tests.conftest import ServerThread
from tests.factories import make_mailbox
from tests.haproxy import SOURCE_ADDRESS, HAProxy, Route
from tests.smtp.helpers import make_message, stored


def v2(source: tuple[str, int], destination: tuple[str, int], *, command: int = 1,
       tlvs: bytes = b"") -> bytes:
    """A version 2 header as the specification lays it out (§2.2)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x1 if src.version == 4 else 0x2
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family << 4 | 0x1]) + \
        struct.pack("!H", len(block)) + block


# --- the parser -----------------------------------------------------------------

def test_v1_tcp4():
    header = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n")
    assert header == ProxyHeader(("192.0.2.7", 56324), ("198.51.100.1", 25), 44)


def test_v1_tcp6_and_unknown():
    header = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 993\r\n")
    assert header is not None and header.source == ("2001:db8::7", 4000)
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(None, None, 15)
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None


@pytest.mark.parametrize("incomplete", [b"", b"PRO", b"PROXY TCP4 192.0.2.7",
                                        V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21\x11\x00",
                                        v2(("192.0.2.7", 1), ("192.0.2.1", 2))[:20]])
def test_incomplete_headers_ask_for_more(incomplete):
    assert parse(incomplete) is None


@pytest.mark.parametrize("bad", [
    b"EHLO client.example\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a port missing
    b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",  # IPv6 said to be TCP4
    b"PROXY TCP4 192.0.2.7 198.51.100.1 065536 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 25\r\n",
    b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",  # a bare LF
    b"PROXY " + b"1" * 120,  # no CRLF within 107 bytes
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 signature
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # too short for two IPv4 addresses
])
def test_bad_headers_are_refused(bad):
    with pytest.raises(ProxyHeaderError):
        parse(bad)


def test_v2_ipv4_ipv6_local_and_tlvs():
    data = v2(("192.0.2.7", 56324), ("198.51.100.1", 465)) + b"\x16\x03\x01"
    assert parse(data) == ProxyHeader(("192.0.2.7", 56324), ("198.51.100.1", 465), 28)
    header = parse(v2(("2001:db8::7", 1), ("2001:db8::1", 143), tlvs=b"\x04\x00\x01\x00"))
    assert header is not None and header.source == ("2001:db8::7", 1) and header.length == 56
    local = v2(("192.0.2.7", 1), ("192.0.2.1", 2), command=0)
    assert parse(local) == ProxyHeader(None, None, len(local))
    unix = V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216)
    assert parse(unix) == ProxyHeader(None, None, 16 + 216)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
ports = st.integers(0, 65535)


@given(addresses, ports, ports, st.binary(max_size=64))
def test_v1_round_trip(address, source_port, destination_port, after):
    family = b"TCP4" if address.version == 4 else b"TCP6"
    line = b"PROXY %s %s %s %d %d\r\n" % (family, str(address).encode(), str(address).encode(),
                                         source_port, destination_port)
    header = parse(line + after)
    assert header == ProxyHeader((str(address), source_port), (str(address), destination_port),
                                 len(line))
    for cut in range(len(line)):  # any prefix: more bytes wanted, never an error
        assert parse(line[:cut]) is None


@given(st.ip_addresses(v=4) | st.ip_addresses(v=6), ports, st.binary(max_size=40),
       st.binary(max_size=64))
def test_v2_round_trip(address, port, tlvs, after):
    data = v2((str(address), port), (str(address), 25), tlvs=tlvs)
    assert parse(data + after) == ProxyHeader((str(address), port), (str(address), 25),
                                              len(data))
    for cut in range(len(data)):
        assert parse(data[:cut]) is None


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_more_or_a_refusal(data):
    try:
        header = parse(data)
    except ProxyHeaderError:
        return
    if header is not None:
        assert looks_like_header(data) and header.length <= len(data)


# --- the listeners behind HAProxy ---------------------------------------------

LISTENER_NAMES = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s",
                  "managesieve"]


@pytest.fixture
def behind_haproxy(transactional_db, settings, tmp_path):
    settings.MAILHOST_PROXY_PROTOCOL_FROM = [f"{SOURCE_ADDRESS}/32"]
    settings.MAILHOST_GREETING_TIMEOUT = 10
    servers = ServerThread(LISTENER_NAMES).start()
    routes = [Route(f"{name}_{version}", servers.port(name), proxy)
              for name in LISTENER_NAMES
              for version, proxy in (("v1", "send-proxy"), ("v2", "send-proxy-v2"))]
    balancer = HAProxy(routes, tmp_path)
    yield servers, balancer.ports
    balancer.stop()
    servers.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_mx_mail_through_haproxy_says_the_clients_address(behind_haproxy, version):
    _, ports = behind_haproxy
    make_mailbox("alice@proxied.example")
    message = make_message("alice@proxied.example")
    with smtplib.SMTP("127.0.0.1", ports[f"smtp_{version}"],
                      source_address=("127.0.0.9", 0), timeout=30) as client:
        client.ehlo("client.test")
        assert client.sendmail("sender@remote.example", ["alice@proxied.example"],
                               message) == {}
    (got,) = stored("alice@proxied.example")
    assert got.startswith(b"Received: from client.test ([127.0.0.9])")


@pytest.mark.parametrize(("listener", "version"), [("smtps", "v2"), ("smtps", "v1"),
                                                    ("submission", "v1")])
def test_submission_through_haproxy_with_tls(behind_haproxy, client_tls_context, listener,
                                             version):
    """Implicit TLS starts after the header; STARTTLS works over a proxied one."""
    _, ports = behind_haproxy
    mailbox = make_mailbox("bob@proxied.example")
    phone, secret = app_passwords.create(mailbox, "Phone")
    port = ports[f"{listener}_{version}"]
    if listener == "smtps":
        client = smtplib.SMTP_SSL("localhost", port, context=client_tls_context,
                                  source_address=("127.0.0.9", 0), timeout=30)
    else:
        client = smtplib.SMTP("localhost", port, source_address=("127.0.0.9", 0), timeout=30)
        client.starttls(context=client_tls_context)
    with client:
        client.login("bob@proxied.example", secret)
        assert client.noop()[0] == 250
    assert last_use(phone)[0] == "127.0.0.9"


def last_use(secret_owner: AppPassword) -> tuple[str | None, str]:
    secret_owner.refresh_from_db()
    return secret_owner.last_used_ip, secret_owner.last_used_protocol


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_imap_and_pop3_sessions_see_the_clients_address(behind_haproxy, client_tls_context,
                                                        version):
    """The clients come from 127.0.0.1, the balancer from 127.0.0.2."""
    _, ports = behind_haproxy
    mailbox = make_mailbox("carol@proxied.example")
    phone, secret = app_passwords.create(mailbox, "Phone")
    AppPassword.objects.filter(pk=phone.pk).update(last_used_ip=SOURCE_ADDRESS)
    with imaplib.IMAP4("127.0.0.1", ports[f"imap_{version}"], timeout=30) as imap:
        imap.login("carol@proxied.example", secret)
    assert last_use(phone) == ("127.0.0.1", "imap")
    AppPassword.objects.filter(pk=phone.pk).update(last_used_ip=SOURCE_ADDRESS)
    with imaplib.IMAP4_SSL("localhost", ports[f"imaps_{version}"],
                           ssl_context=client_tls_context, timeout=30) as imap:
        imap.login("carol@proxied.example", secret)
    assert last_use(phone) == ("127.0.0.1", "imap")
    for name, client in (("pop3", poplib.POP3("127.0.0.1", ports[f"pop3_{version}"], 30)),
                         ("pop3s", poplib.POP3_SSL("localhost", ports[f"pop3s_{version}"],
                                                   context=client_tls_context, timeout=30))):
        AppPassword.objects.filter(pk=phone.pk).update(last_used_ip=SOURCE_ADDRESS)
        client.user("carol@proxied.example")
        client.pass_(secret)
        client.quit()
        assert last_use(phone)[0] == "127.0.0.1", name


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_managesieve_sessions_see_the_clients_address(behind_haproxy, version):
    _, ports = behind_haproxy
    mailbox = make_mailbox("erin@proxied.example")
    phone, secret = app_passwords.create(mailbox, "Phone")
    with socket.create_connection(("127.0.0.1", ports[f"managesieve_{version}"]),
                                  timeout=30) as sock:
        reader = sock.makefile("rb")
        while not reader.readline().startswith(b"OK"):  # the capabilities, then OK
            pass
        # RFC 5804 §2.1: SASL PLAIN; in clear text, as the client's own
        # address (loopback) allows, which the PROXY header must have told.
        credentials = base64.b64encode(f"\0erin@proxied.example\0{secret}".encode())
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + credentials + b'"\r\n')
        assert reader.readline().startswith(b"OK")
    assert last_use(phone) == ("127.0.0.1", "managesieve")


def closed_without_service(sock: socket.socket) -> bool:
    """Whether the listener closes the connection (reading to the end)."""
    sock.settimeout(30)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return b"250" not in received


def test_a_header_from_outside_the_balancers_is_refused(behind_haproxy):
    servers, _ = behind_haproxy
    with socket.create_connection(("127.0.0.1", servers.port("smtp"))) as sock:
        assert sock.recv(100).startswith(b"220 ")  # 127.0.0.1 is a direct client
        sock.sendall(b"PROXY TCP4 203.0.113.5 127.0.0.1 4000 25\r\nEHLO spoofed.test\r\n")
        assert closed_without_service(sock)


def test_the_balancer_without_a_header_is_refused(behind_haproxy):
    servers, _ = behind_haproxy
    for listener in ("smtp", "imaps"):
        with socket.create_connection(("127.0.0.1", servers.port(listener)),
                                      source_address=(SOURCE_ADDRESS, 0)) as sock:
            sock.sendall(b"EHLO no-header.test\r\n")
            assert closed_without_service(sock)
    # A TLS client straight at the implicit-TLS port from there: no header either.
    with socket.create_connection(("127.0.0.1", servers.port("imaps")),
                                  source_address=(SOURCE_ADDRESS, 0)) as sock:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            context.wrap_socket(sock).recv(100)


def test_direct_clients_still_work_beside_the_balancer(behind_haproxy):
    servers, _ = behind_haproxy
    make_mailbox("dave@proxied.example")
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=30) as client:
        client.ehlo("direct.test")
        client.sendmail("x@remote.example", ["dave@proxied.example"],
                        make_message("dave@proxied.example"))
    (got,) = stored("dave@proxied.example")
    assert got.startswith(b"Received: from direct.test ([127.0.0.1])")
