"""The production resolver (dnspython) against a DNS server on 127.0.0.1,
so that the answer shapes the checks rely on are those of real DNS replies."""

import socket
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from apps.antispam import auth
from apps.antispam.dns import DnsPythonResolver, DnsTemporaryError

RECORDS = {
    ("sender.example.", "TXT"): ['"v=spf1 mx " "-all"'],
    ("sender.example.", "MX"): ["10 mx1.sender.example."],
    ("mx1.sender.example.", "A"): ["192.0.2.10"],
    ("2.0.0.127.bl.test.", "A"): ["127.0.0.2"],
}


class TinyDnsServer:
    """Answers from RECORDS; NXDOMAIN for unknown names; SERVFAIL for *.broken."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.RA
            if name.endswith("broken."):
                reply.set_rcode(dns.rcode.SERVFAIL)
            elif (name, rdtype) in RECORDS:
                reply.answer.append(dns.rrset.from_text_list(
                    name, 300, "IN", rdtype, RECORDS[name, rdtype]))
            elif not any(known == name for known, _ in RECORDS):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def resolver(settings) -> Iterator[DnsPythonResolver]:
    server = TinyDnsServer()
    settings.MAILHOST_DNS_NAMESERVERS = ["127.0.0.1"]
    settings.MAILHOST_DNS_PORT = server.port
    settings.MAILHOST_DNS_TIMEOUT = 2
    yield DnsPythonResolver()
    server.close()


def test_answers_in_the_shapes_the_checks_use(resolver):
    assert resolver.query("sender.example", "TXT") == ["v=spf1 mx -all"]  # strings joined
    assert resolver.query("sender.example", "MX") == ["10 mx1.sender.example"]
    assert resolver.query("2.0.0.127.bl.test", "A") == ["127.0.0.2"]
    assert resolver.query("sender.example", "A") == []  # no data
    assert resolver.query("nowhere.example", "TXT") == []  # NXDOMAIN
    with pytest.raises(DnsTemporaryError):
        resolver.query("x.broken", "TXT")


def test_spf_through_the_real_resolver(settings, resolver):
    settings.MAILHOST_DNS_RESOLVER = "apps.antispam.dns.DnsPythonResolver"
    assert auth.check_spf("192.0.2.10", "a@sender.example", "mx").result == "pass"
    assert auth.check_spf("192.0.2.99", "a@sender.example", "mx").result == "fail"
    assert auth.check_spf("192.0.2.10", "a@x.broken", "mx").result == "temperror"
