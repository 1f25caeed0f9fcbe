"""SMTP replies, named, with the RFC line they come from.

Every reply carries an enhanced status code (RFC 2034 §4: all 2xx/4xx/5xx
replies except the greeting and the answer to HELO/EHLO)."""

from __future__ import annotations

import re

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"  # RFC 3463 §3.2 X.1.0 other address status
RECIPIENT_OK = "250 2.1.5 Recipient OK"  # RFC 3463 X.1.5 destination address valid
BYE = "221 2.0.0 Bye"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"  # RFC 3463 X.3.2
# RFC 5321 §3.8: a 421 and the connection closes; RFC 3463 X.7.0 other security status.
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
# RFC 5321 §4.5.3.2.7: the server may close a connection that says nothing (X.4.2).
NO_COMMAND_IN_TIME = "421 4.4.2 No command received in time, closing connection"
IDLE_TIMEOUT = "421 4.4.2 Idle for too long, closing connection"
TEMPORARY_FAILURE = "451 4.3.0 Temporary server failure, try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
# RFC 5321 §4.1.1.1 (a domain or address literal), RFC 6531 §3.3 (UTF-8 only).
BAD_HELO_SYNTAX = "501 5.5.4 Syntax: the hostname must be a domain or address literal in UTF-8"
UNKNOWN_USER = "550 5.1.1 No such user here"
RELAY_DENIED = "550 5.7.1 Relaying denied"
# RFC 5321 §2.3.8: lines end in CRLF only; a bare LF is how SMTP smuggling starts.
BARE_LF = "550 5.5.2 Message contains a bare LF; lines must end with CRLF"
# Submission refuses a bare CR too (a receiver that ends DATA at "<CR>.<CR>" would
# see two messages where our user sent one).
BARE_NEWLINE = "550 5.5.2 Message contains a bare CR or LF; lines must end with CRLF"

# Enhanced code for replies that come from aiosmtpd without one.
_DEFAULT_ENHANCED = {
    "2": "2.0.0", "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1",
    "455": "4.5.4", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "534": "5.7.9", "535": "5.7.8", "538": "5.7.11",
    "550": "5.0.0", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}
_HAS_ENHANCED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
_REPLY = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)


def with_enhanced_code(line: bytes) -> bytes:
    """Insert a default enhanced status code into a reply line that lacks one."""
    if _HAS_ENHANCED.match(line):
        return line
    match = _REPLY.match(line)
    if match is None:
        return line
    code, sep, text = match.groups()
    if code[:1] in (b"1", b"3"):
        return line
    enhanced = _DEFAULT_ENHANCED.get(code.decode()) or _DEFAULT_ENHANCED.get(code[:1].decode())
    if enhanced is None:
        enhanced = f"{code[:1].decode()}.0.0"
    return code + sep + enhanced.encode() + b" " + text
