"""A small authoritative DNS server on 127.0.0.1 (UDP, dnspython) for tests
of the production resolver: it answers from a table given to it."""

from __future__ import annotations

import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# (absolute name, type) -> record data in zone-file syntax
Records = dict[tuple[str, str], list[str]]


class TinyDnsServer:
    """Answers from ``records``; NXDOMAIN for unknown names; SERVFAIL for *.broken."""

    def __init__(self, records: Records) -> None:
        self.records = records
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
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                # A stray datagram (a late retry of an earlier test's resolver
                # to a port since reused): dropped, as a real server would.
                continue
            question = query.question[0]
            name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.RA | dns.flags.AA
            if name.endswith("broken."):
                reply.set_rcode(dns.rcode.SERVFAIL)
            elif (name, rdtype) in self.records:
                reply.answer.append(dns.rrset.from_text_list(
                    name, 300, "IN", rdtype, self.records[name, rdtype]))
            elif not any(known == name for known, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()
