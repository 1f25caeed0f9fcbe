"""Fuzzing: the parsers and protocol state machines fed generated and mutated
input (issue 14, item 7).

Targets (``--targets``, all by default):

  reference the harness alone (mutation of the corpus messages, alarm, log
            capture) around an input that nothing parses: what the rows
            below would be with a parser that took no time.
  imap      apps.imap.parser: CommandFramer over a byte stream, parse_command
            on every framed command, parse_imap_url on CATENATE URLs.
            Bad input: ParseError (BAD / NO [TOOBIG] / BYE), ValueError from
            parse_imap_url (NO [BADURL]).
  pop3      apps.pop3.protocol: parse_command on every line, decode_sasl_plain
            on every word. Bad input: CommandError (-ERR).
  smtp      apps.smtp: a whole session (MX with InboundHandler, or submission
            with SubmissionHandler after AUTH) through aiosmtpd's state machine
            over an in-memory transport, against a real throwaway database.
            Bad input: any SMTP reply; a crash is an exception that reaches
            aiosmtpd's handler or our own "delivery failed" guard (both log it).
  mime      apps.store.mime.analyze and extract_text, and leaf_parts of the
            result. Bad input: none (analyze "never raises"; its last-line
            guard logs the exception, counted here as a crash).
  dsn       apps.delivery.dsn: xtext_decode, parse_notify, parse_orcpt and
            status_of on lines of the input, build_dsn around it as the
            returned message. Bad input: mailhost.errors.Invalid.
  dmarc     apps.antispam.auth.parse_dmarc_record. Bad input: None returned.
  spf       apps.antispam.auth.check_spf (pyspf through our resolver seam),
            the input's lines served as the TXT records of the domains the
            record names. Bad input: an SPF result; an exception pyspf raises
            (check_spf answers permerror for it) is counted as a crash.
  sanitize  the webmail's reading path: mime.analyze, reading.body_part,
            decode_text of the body, clean_html / text_to_html /
            html_to_text, attachments, content ids and verdict badges.
            Bad input: none.

Inputs: a fifth generated from the target's protocol tokens, the rest seeds
(the corpora, ``--corpus``, and protocol transcripts below) mutated by byte
flips, inserts of protocol tokens, splices of two seeds, truncations, number
swaps, line-end changes and, rarely, a chunk repeated to about 1 MB.

Each input runs under a one-second CPU-time alarm (ITIMER_PROF: a busy machine
does not make a slow input look like a hang); an SMTP input, a whole pipelined
session, gets a second per 1,000 lines. A crash or hang is saved under
var/fuzz/<target>/ with its traceback (``python bench/fuzz.py --replay FILE``
runs one again). Peak RSS is each worker's high-water mark; "1 MB growth" is
the largest rise of that mark caused by one of the ~1 MB inputs.

  nice -n 19 .venv/bin/python bench/fuzz.py --inputs 1000000 > var/fuzz/run.log
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, add_corpus_argument, corpus_messages

FUZZ_DIR = ROOT / "var" / "fuzz"
CPU_LIMIT = 1.0  # seconds of CPU for one input before it counts as a hang
HUGE = 1 << 20  # the size a "huge repeat" grows an input to

# --- the mutator ---------------------------------------------------------------

_INTERESTING_BYTES = b"\x00\xff\r\n \t\"'()[]{}<>\\%=;:,.@+-*~/\x7f\x80\xc3\xe2"
_INTERESTING_NUMBERS = (
    b"0", b"1", b"-1", b"4294967295", b"4294967296", b"2147483648", b"18446744073709551616",
    b"99999999999999999999999", b"1e309", b"00000000000000000001", b"65535", b"1048576",
)
_DIGITS = re.compile(rb"\d+")


class Mutator:
    """Fast mutation of seed inputs (bytes in, bytes out, no coverage feedback)."""

    def __init__(self, rng: random.Random, seeds: list[bytes], tokens: list[bytes],
                 *, huge_one_in: int = 20000) -> None:
        self.rng = rng
        self.seeds = seeds or [b""]
        self.tokens = tokens or [b" "]
        self.huge_one_in = huge_one_in

    def next(self) -> bytes:
        """One input: generated from tokens (a fifth) or a mutated seed."""
        rng = self.rng
        data = self.generate() if rng.random() < 0.2 else self.mutate(rng.choice(self.seeds))
        if self.huge_one_in and rng.randrange(self.huge_one_in) == 0:
            data = self.huge(data)
        return data

    def generate(self) -> bytes:
        rng = self.rng
        parts = [rng.choice(self.tokens) for _ in range(rng.randint(1, 24))]
        glue = rng.choice((b" ", b"", b"\r\n", b" ", b"\n"))
        return glue.join(parts) + rng.choice((b"\r\n", b"", b"\n"))

    def mutate(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for _ in range(self.rng.choice((1, 1, 2, 3, 4, 8))):
            buf = self._one(buf)
        return bytes(buf)

    def huge(self, data: bytes) -> bytes:
        """A chunk of the input (or a token) repeated to about 1 MB."""
        rng = self.rng
        if data and rng.random() < 0.7:
            start = rng.randrange(len(data))
            chunk = data[start:start + rng.randint(1, 64)]
        else:
            chunk = rng.choice(self.tokens)
        at = rng.randint(0, len(data))
        return data[:at] + chunk * (HUGE // max(1, len(chunk))) + data[at:]

    def _one(self, buf: bytearray) -> bytearray:
        rng = self.rng
        size = len(buf)
        op = rng.randrange(11)
        if op == 0 and size:  # bit flip
            buf[rng.randrange(size)] ^= 1 << rng.randrange(8)
        elif op == 1 and size:  # an interesting byte
            buf[rng.randrange(size)] = rng.choice(_INTERESTING_BYTES)
        elif op in (2, 3):  # a protocol token
            at = rng.randint(0, size)
            buf[at:at] = rng.choice(self.tokens)
        elif op == 4 and size:  # delete a range
            start = rng.randrange(size)
            del buf[start:start + rng.randint(1, 32)]
        elif op == 5 and size:  # duplicate a range elsewhere
            start = rng.randrange(size)
            chunk = buf[start:start + rng.randint(1, 64)]
            at = rng.randint(0, size)
            buf[at:at] = chunk * rng.choice((1, 1, 2, 16))
        elif op == 6:  # splice with another seed
            other = rng.choice(self.seeds)
            cut = rng.randint(0, size)
            buf = buf[:cut] + other[rng.randint(0, len(other)):]
        elif op == 7 and size:  # truncate
            del buf[rng.randrange(size):]
        elif op == 8:  # swap a number for an interesting one
            numbers = list(_DIGITS.finditer(buf)) if size < 65536 else []
            if numbers:
                found = rng.choice(numbers)
                buf[found.start():found.end()] = rng.choice(_INTERESTING_NUMBERS)
            else:
                at = rng.randint(0, size)
                buf[at:at] = rng.choice(_INTERESTING_NUMBERS)
        elif op == 9 and size:  # line ends: CRLF to LF or CR, or a stray one
            choice = rng.randrange(3)
            if choice == 0:
                buf = bytearray(bytes(buf).replace(b"\r\n", b"\n"))
            elif choice == 1:
                buf = bytearray(bytes(buf).replace(b"\r\n", b"\r"))
            else:
                at = rng.randint(0, size)
                buf[at:at] = rng.choice((b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00"))
        elif op == 10 and size:  # change the case of a range
            start = rng.randrange(size)
            end = start + rng.randint(1, 32)
            buf[start:end] = bytes(buf[start:end]).swapcase()
        return buf


# --- seeds and tokens ------------------------------------------------------------

IMAP_SEEDS = [
    b"a1 CAPABILITY\r\n", b"a2 LOGIN alice@example.org secret\r\n",
    b'a3 LOGIN "alice@example.org" {6}\r\nsecret\r\n', b"a4 AUTHENTICATE PLAIN AGFsaWNlAHM=\r\n",
    b"a5 SELECT INBOX (CONDSTORE)\r\n", b"a6 EXAMINE \"Sent Items\"\r\n",
    b"a7 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
    b"a8 CREATE Archive/2026 (USE (\\Archive))\r\n", b"a9 DELETE &ZeVnLIqe-\r\n",
    b"b1 RENAME Old New\r\n", b"b2 SUBSCRIBE Lists\r\n", b"b3 UNSUBSCRIBE Lists\r\n",
    b'b4 LIST "" "*"\r\n', b'b5 LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX "Lists/%") '
    b"RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n", b'b6 LSUB "" %\r\n',
    b"b7 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)\r\n",
    b"b8 APPEND INBOX (\\Seen \\Draft) \"05-Nov-2026 10:00:00 +0100\" {23+}\r\n"
    b"Subject: hi\r\n\r\nhello\r\n\r\n",
    b"b9 APPEND Drafts CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=20/;SECTION=1.MIME\" "
    b"TEXT {4+}\r\nabcd URL \"imap://u@h/INBOX/;UID=3/;PARTIAL=0.100\")\r\n",
    b"c1 APPEND INBOX ~{5+}\r\na\x00bcd\r\n", b"c2 CHECK\r\n", b"c3 CLOSE\r\n", b"c4 UNSELECT\r\n",
    b"c5 EXPUNGE\r\n", b"c6 UID EXPUNGE 1:5,7\r\n",
    b"c7 SEARCH CHARSET UTF-8 OR (FROM \"bob\" SINCE 1-Jan-2026) NOT (SEEN LARGER 10000) "
    b"BODY {3+}\r\n\xc3\xa9t\r\n",
    b"c8 UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) UID 1:* MODSEQ 5 HEADER Subject hi\r\n",
    b"c9 SEARCH $ OR OR ANSWERED DELETED FLAGGED KEYWORD $Junk UNKEYWORD x BEFORE 2-Feb-2026 "
    b"ON 3-Mar-2026 SENTBEFORE 4-Apr-2026 SENTON 5-May-2026 SENTSINCE 6-Jun-2026 "
    b"SMALLER 5 TEXT t TO t CC c BCC b SUBJECT s NEW OLD RECENT DRAFT UNANSWERED UNDELETED "
    b"UNDRAFT UNFLAGGED UNSEEN 2,4:*\r\n",
    b"d1 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)\r\n",
    b"d2 UID FETCH 1:100 (BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)] BODY[1.2.MIME]"
    b"<0.1024> BINARY.PEEK[1] BINARY.SIZE[2]) (CHANGEDSINCE 12345 VANISHED)\r\n",
    b"d3 FETCH 2 (BODY[HEADER.FIELDS.NOT (Received)] BODY[TEXT] RFC822 RFC822.HEADER "
    b"RFC822.TEXT BODY ALL FAST FULL MODSEQ EMAILID THREADID SAVEDATE)\r\n",
    b"d4 STORE 1:3 +FLAGS.SILENT (\\Deleted \\Seen)\r\n",
    b"d5 UID STORE 4 (UNCHANGEDSINCE 7) -FLAGS ($Forwarded)\r\n", b"d6 COPY 1:2 Archive\r\n",
    b"d7 UID MOVE 5:7 Trash\r\n", b"d8 IDLE\r\n", b"d9 ENABLE CONDSTORE QRESYNC UTF8=ACCEPT\r\n",
    b'e1 ID ("name" "client" "version" "1.0")\r\n', b"e2 ID NIL\r\n", b"e3 NAMESPACE\r\n",
    b'e4 GETQUOTA ""\r\n', b"e5 GETQUOTAROOT INBOX\r\n", b'e6 SETQUOTA "" (STORAGE 512)\r\n',
    b"e7 COMPRESS DEFLATE\r\n", b"e8 SORT (REVERSE DATE SUBJECT ARRIVAL FROM TO CC SIZE) UTF-8 "
    b"ALL\r\n", b"e9 UID SORT RETURN (ALL COUNT) (DISPLAYFROM) US-ASCII UNSEEN\r\n",
    b"f1 THREAD REFERENCES UTF-8 ALL\r\n",
    b"f2 UID THREAD ORDEREDSUBJECT UTF-8 SINCE 1-Feb-1994\r\n",
    b'f3 GETMETADATA (MAXSIZE 1024 DEPTH infinity) INBOX (/private/comment /shared/comment)\r\n',
    b'f4 SETMETADATA INBOX (/private/comment "hello" /shared/x NIL)\r\n',
    b"f5 STARTTLS\r\n", b"f6 NOOP\r\n", b"f7 LOGOUT\r\n",
    b"f8 LOGIN {5}\r\nalice {6}\r\nsecret\r\n",
]
IMAP_TOKENS = sorted({
    *(word for seed in IMAP_SEEDS for word in re.split(rb"[ ()\r\n]+", seed) if word),
    b"(", b")", b"[", b"]", b"<", b">", b"{0}\r\n", b"{4}\r\n", b"{99999999999}\r\n",
    b"{5+}\r\n", b"~{3}\r\n", b"{1-}\r\n", b'"', b'\\"', b"\\", b"NIL", b"*", b"$", b"%",
    b"1:*", b"*:1", b"4294967295", b"4294967296", b"0", b"UID", b"HEADER.FIELDS ()",
    b"BODY[]", b"BODY[0]", b"BINARY[1.0]", b"<4294967295.4294967295>", b"\r\n", b" ",
    b"OR", b"NOT", b"((((((((((((((((((((", b"))))))))))))))))))))", b"&AGEAYQ-", b"&-", b"&",
    b"imap://", b";UID=", b"/;SECTION=", b"/;PARTIAL=", b"%FF", b"%C3%A9", b"\xff",
})

POP3_SEEDS = [
    b"USER alice@example.org\r\n", b"PASS secret with spaces\r\n", b"STAT\r\n", b"LIST\r\n",
    b"LIST 1\r\n", b"RETR 1\r\n", b"DELE 2\r\n", b"NOOP\r\n", b"RSET\r\n", b"QUIT\r\n",
    b"TOP 1 10\r\n", b"UIDL\r\n", b"UIDL 3\r\n", b"CAPA\r\n", b"STLS\r\n", b"AUTH\r\n",
    b"AUTH PLAIN\r\n", b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==\r\n",
    b"AUTH PLAIN =\r\n", b"AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==\r\n",
    b"CAPA\r\nUSER a\r\nPASS b\r\nSTAT\r\nLIST\r\nUIDL\r\nTOP 1 0\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n",
]
POP3_TOKENS = [b"USER", b"PASS", b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"QUIT",
               b"TOP", b"UIDL", b"CAPA", b"STLS", b"AUTH", b"PLAIN", b"=", b" ", b"  ", b"\r\n",
               b"1", b"0", b"-1", b"99999999999", b"4294967296", b"\x00", b"\xc3\xa9", b"\xff",
               b"AGFsaWNlAHM=", b"AA==", b"====", b"\t"]

SMTP_SEEDS = [
    b"EHLO client.example\r\nMAIL FROM:<bob@remote.example> SIZE=100 BODY=8BITMIME\r\n"
    b"RCPT TO:<alice@fuzz.example>\r\nRCPT TO:<info@fuzz.example>\r\nDATA\r\n"
    b"From: bob@remote.example\r\nTo: alice@fuzz.example\r\nSubject: hi\r\n\r\nHello\r\n.\r\n"
    b"QUIT\r\n",
    b"HELO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<Alice+tag@FUZZ.example>\r\nDATA\r\n"
    b"Subject: bounce\r\n\r\n..dot\r\n.\r\nRSET\r\nNOOP\r\nVRFY alice\r\nQUIT\r\n",
    b"EHLO c\r\nMAIL FROM:<b@r.example> SMTPUTF8\r\nRCPT TO:<\xc3\xa9l\xc3\xa8ve@fuzz.example>\r\n"
    b"RCPT TO:<nobody@fuzz.example>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\n.\n.\r\nQUIT\r\n",
    b"EHLO c\r\nSTARTTLS\r\nHELP\r\nEXPN list\r\nMAIL FROM:<@a,@b:u@c>\r\nDATA\r\nQUIT\r\n",
    b"EHLO c\r\nAUTH PLAIN AGFsaWNlQGZ1enouZXhhbXBsZQBzZWNyZXQtcGFzc3dvcmQ=\r\n"
    b"MAIL FROM:<alice@fuzz.example> RET=HDRS ENVID=QQ+2Bx\r\n"
    b"RCPT TO:<bob@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40remote.example\r\n"
    b"RCPT TO:<info@fuzz.example> NOTIFY=NEVER\r\nDATA\r\nFrom: alice@fuzz.example\r\n"
    b"To: bob@remote.example\r\nSubject: out\r\n\r\nHi\r\n.\r\nQUIT\r\n",
    b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2VAZnV6ei5leGFtcGxl\r\nc2VjcmV0LXBhc3N3b3Jk\r\n"
    b"MAIL FROM:<alice@fuzz.example>\r\nRCPT TO:<alice@fuzz.example>\r\nBDAT 5 LAST\r\n"
    b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n",
    # RFC 3030 chunks (a binary body, pipelined), RFC 8689 outside TLS.
    b"EHLO c\r\nMAIL FROM:<bob@remote.example> BODY=BINARYMIME\r\n"
    b"RCPT TO:<alice@fuzz.example>\r\nBDAT 12\r\nSubject: \x00\xff\n\r\r\n"
    b"BDAT 6 LAST\r\n\r\nab\ncDATA\r\nBDAT 1\r\nxRSET\r\n"
    b"MAIL FROM:<bob@remote.example> REQUIRETLS\r\nQUIT\r\n",
]
SMTP_TOKENS = [b"EHLO c", b"HELO c", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP",
               b"QUIT", b"VRFY", b"EXPN", b"HELP", b"STARTTLS", b"AUTH PLAIN", b"AUTH LOGIN",
               b"AUTH CRAM-MD5", b"BDAT", b"BDAT 3", b" LAST", b"REQUIRETLS", b"<", b">",
               b"<>", b"<alice@fuzz.example>",
               b"<info@fuzz.example>", b"<fwd@fuzz.example>", b"<x@remote.example>",
               b"@fuzz.example", b"SIZE=", b"BODY=8BITMIME", b"BODY=BINARYMIME", b"SMTPUTF8",
               b"RET=FULL", b"ENVID=", b"NOTIFY=", b"ORCPT=rfc822;", b"AUTH=<>", b"+2B",
               b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b".\r\n", b"..",
               b"\r\n", b"\n", b"\r", b"\x00", b" ", b"=", b":", b"\xc3\xa9", b"\xff",
               b"[127.0.0.1]", b"[IPv6:::1]", b"%", b"!", b"\"a@b\"", b"*"]

DSN_SEEDS = [b"NOTIFY=SUCCESS,FAILURE,DELAY", b"NOTIFY=NEVER", b"ORCPT=rfc822;bob+40remote.example",
             b"ORCPT=utf-8;b\\x{E9}b@remote.example", b"ENVID=QQ+2Bx+3D", b"550 5.1.1 No such user",
             b"421-4.7.0 Try later\r\n421 4.7.0 Really", b"250 2.0.0 OK", b"554 no code"]
DSN_TOKENS = [b"NOTIFY=", b"ORCPT=", b"ENVID=", b"rfc822;", b"utf-8;", b"SUCCESS", b"FAILURE",
              b"DELAY", b"NEVER", b",", b";", b"+", b"+2B", b"+3D", b"+ZZ", b"+0", b"=", b"\x7f",
              b"\xc3\xa9", b"550", b"5.1.1", b"4.999.999", b" ", b"-", b"\r\n"]

DMARC_SEEDS = [b"v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s; aspf=r; "
               b"rua=mailto:dmarc@example.org; ruf=mailto:f@example.org; fo=1; ri=86400",
               b"v=DMARC1;p=none", b"v=DMARC1; p=bogus; rua=mailto:x@y", b"v=DMARC1",
               b"v=dmarc1; p=reject", b" v = DMARC1 ; p = quarantine ;"]
DMARC_TOKENS = [b"v=DMARC1", b"p=", b"sp=", b"pct=", b"adkim=", b"aspf=", b"rua=", b"ruf=",
                b"none", b"quarantine", b"reject", b"s", b"r", b";", b"=", b" ", b"-1",
                b"100", b"99999999999999999999", b"\x00", b"\t", b"\xc3\xa9", "\u0663".encode()]

SPF_SEEDS = [b"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx -all",
             b"v=spf1 include:inc.fuzz.example ~all\nv=spf1 a:fuzz.example -all",
             b"v=spf1 redirect=inc.fuzz.example\nv=spf1 ip4:192.0.2.10 ?all",
             b"v=spf1 exists:%{i}.%{l1r+-}.fuzz.example ptr:fuzz.example -all "
             b"exp=inc.fuzz.example\nexplained %{s} %{h} %{d2}",
             b"v=spf1 a/24 mx/16//64 +all", b"v=spf1 -ip4:192.0.2.10 ip4:0.0.0.0/0"]
SPF_TOKENS = [b"v=spf1", b" ", b"ip4:", b"ip6:", b"a", b"mx", b"ptr", b"exists:", b"include:",
              b"redirect=", b"exp=", b"all", b"-all", b"~all", b"?all", b"+all", b"/24", b"/0",
              b"/33", b"//128", b"192.0.2.10", b"2001:db8::1", b"fuzz.example", b"inc.fuzz.example",
              b"%{i}", b"%{s}", b"%{l}", b"%{o}", b"%{d}", b"%{p}", b"%{v}", b"%{h}", b"%{c}",
              b"%{r}", b"%{t}", b"%{ir}", b"%{d9999999999r}", b"%{l1r+-._}", b"%%", b"%_", b"%-",
              b"%", b"{", b"}", b":", b"=", b"\n", b"\xc3\xa9", b"\x00", b"unknown=mod"]

HTML_SEEDS = [
    b"<p style=\"color:red;background:url(http://t.example/x.png)\">Hi "
    b"<img src=\"cid:logo@x\"><img src=\"https://t.example/p.gif\"><a href=\"javascript:x\">a</a>"
    b"<a href=\"https://ok.example/\">ok</a></p><script>alert(1)</script>",
    b"<table background=\"http://x/y\"><tr><td style=\"width:expression(alert(1))\">x</td>"
    b"</tr></table><style>@import url(x)</style><svg><image href=x></svg>",
    b"<!-- c --><div style=\"b\\61ckground:u\\72l(x)\">t</div><img src=\"data:image/png;"
    b"base64,iVBORw0KGgo=\"><form><input></form><iframe src=x></iframe><p>&lt;&amp;&#x0;",
]
HTML_TOKENS = [b"<", b">", b"</", b"/>", b"<p>", b"<div>", b"<img src=", b"<a href=", b"<script>",
               b"</script>", b"<style>", b"<svg>", b"<math>", b"<table>", b"<td>", b"<template>",
               b"<!--", b"-->", b"<![CDATA[", b"]]>", b"style=\"", b"url(", b"image-set(",
               b"@import", b"expression(", b"javascript:", b"behavior:", b"-moz-binding", b"\\",
               b"cid:", b"http://x/", b"https://x/", b"data:image/png;base64,", b"mailto:",
               b"&amp;", b"&#0;", b"&#x10FFFF;", b"&lt;", b"\"", b"'", b"=", b"\x00", b"\r\n",
               b"Content-Type: text/html; charset=utf-8\r\n", b"charset=iso-2022-jp",
               b"Content-Transfer-Encoding: quoted-printable\r\n", b"=3D", b"=\r\n",
               b"Content-Transfer-Encoding: base64\r\n", b"--b\r\n", b"--b--\r\n",
               b"multipart/alternative; boundary=b", b"text/plain", b"https://link.example/a?b=c"]

MIME_TOKENS = [b"\r\n", b"\r\n\r\n", b": ", b"Content-Type: ", b"multipart/mixed; boundary=",
               b"multipart/alternative; boundary=\"b\"", b"message/rfc822", b"text/plain",
               b"text/html", b"boundary=", b"charset=", b"name*0*=utf-8''%C3%A9",
               b"name*1=\"x\"", b"filename*=", b"--", b"--b\r\n", b"--b--\r\n",
               b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
               b"Content-Disposition: attachment; filename=", b"Content-Language: en, de",
               b"Content-ID: <a@b>", b"=?utf-8?B?", b"=?iso-8859-1?Q?caf=E9?=", b"?=", b"=?",
               b"From: ", b"To: ", b"Cc: ", b"Date: ", b"Subject: ", b"Message-ID: ", b"<",
               b">", b"\"", b"(", b")", b"\\", b",", b";", b":", b"@", b"group:;", b"=\r\n",
               b"=3D", b"=FF", b" \t", b"Thu, 26 Nov 2026 10:00:00 +0000", b"31 Feb 99999 25:61",
               b"\x00", b"\xff", b"\xc3\xa9"]


def _transcripts(seeds: list[bytes], messages: list[bytes]) -> list[bytes]:
    return seeds + [b"EHLO c\r\nMAIL FROM:<b@r.example>\r\nRCPT TO:<alice@fuzz.example>\r\nDATA\r\n"
                    + message.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\nQUIT\r\n"
                    for message in messages[:50]]


# --- targets -----------------------------------------------------------------------

# The line-oriented targets take this many commands (lines) of an input, as
# many as a client pipelines; one may still be as long as the whole input.
MAX_LINES = 64


class Crash(Exception):
    """An exception a target's own code caught and logged (the traceback is the
    logged one): still a crash of the parser below it."""


class Hang(BaseException):
    """The CPU-time alarm: a BaseException so that no ``except Exception``
    in the code under test can swallow it."""


class _LoggedExceptions(logging.Handler):
    """Exceptions the code under test logged with their traceback, and the
    warnings of guards that catch everything (check_spf's)."""

    GUARDS = ("spf check failed",)

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.getMessage().startswith(self.GUARDS):
            self.records.append(record)

    def raise_first(self) -> None:
        if self.records:
            record, self.records = self.records[0], []
            if record.exc_info and record.exc_info[1] is not None:
                raise Crash(record.getMessage()) from record.exc_info[1]
            raise Crash(record.getMessage())


_logged = _LoggedExceptions()


@contextmanager
def _capturing_logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.addHandler(_logged)
    root.setLevel(min(level, logging.WARNING))
    try:
        yield
    finally:
        root.removeHandler(_logged)
        root.setLevel(level)


@dataclass
class Target:
    name: str
    run: Callable[[bytes], object]  # catches the target's documented bad-input errors
    tokens: list[bytes]
    seeds: Callable[[list[bytes]], list[bytes]]  # corpus messages -> seeds
    # An input is a whole pipelined session: 1 s of CPU per 1,000 lines (a
    # 1 MB input may hold 60,000 commands, each answered in microseconds).
    session: bool = False
    finish: Callable[[], None] | None = None  # called after a series of inputs


def _imap(data: bytes) -> None:
    from django.conf import settings

    from apps.imap.parser import (
        CommandFramer,
        Continue,
        LimitError,
        ParseError,
        parse_command,
        parse_imap_url,
    )

    framer = CommandFramer(max_line=settings.MAILHOST_IMAP_MAX_LINE,
                           max_literal=settings.MAILHOST_IMAP_MAX_LITERAL)
    framer.feed(data)
    for _ in range(MAX_LINES):
        try:
            item = framer.next()
        except LimitError:
            return  # the session says BYE and closes
        except ParseError:
            continue  # TooBig: NO [TOOBIG], the session goes on
        if item is None:
            return
        if isinstance(item, Continue):
            continue
        try:
            command = parse_command(item)
        except ParseError:
            continue
        for kind, value in command.args.get("catenate") or ():
            if kind == "URL":
                with suppress(ValueError):
                    parse_imap_url(value)


def _pop3(data: bytes) -> None:
    from apps.pop3.protocol import CommandError, decode_sasl_plain, parse_command

    for line in data.split(b"\n", MAX_LINES)[:MAX_LINES]:
        with suppress(CommandError):
            parse_command(line)
        # A SASL response: a line of its own, or AUTH PLAIN's initial response.
        with suppress(CommandError):
            decode_sasl_plain(line.decode("utf-8", "replace").strip().rpartition(" ")[2])


def _dsn(data: bytes) -> None:
    from apps.delivery import dsn
    from mailhost.errors import Invalid

    text = data.decode("utf-8", "replace")
    orcpt = notify = ""
    for line in text.split("\n", MAX_LINES)[:MAX_LINES]:
        name, _, value = line.partition("=")
        for parse in (dsn.xtext_decode, dsn.parse_notify, dsn.parse_orcpt):
            try:
                result = parse(value or name)
            except Invalid:
                continue
            if parse is dsn.parse_orcpt:
                orcpt = result
            elif parse is dsn.parse_notify:
                notify = result
        dsn.status_of(line, permanent=bool(notify))
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    report = dsn.RecipientReport(recipient=text[:200], action="failed",
                                 status=dsn.status_of(text, permanent=True), orcpt=orcpt,
                                 remote_mta=text[-100:], diagnostic=text[:300],
                                 last_attempt=now, will_retry_until=now)
    dsn.build_dsn(reporting_mta="mx.fuzz.example", recipient="bob@remote.example",
                  original=data, reports=[report], ret="HDRS" if notify else "FULL",
                  envid=text[:100], arrival=now, now=now)


def _dmarc(data: bytes) -> None:
    from apps.antispam.auth import parse_dmarc_record

    parse_dmarc_record(data.decode("utf-8", "replace"))


def _spf(data: bytes) -> None:
    from apps.antispam.auth import check_spf
    from tests import fakedns

    records = data.decode("utf-8", "replace").split("\n")
    zone = fakedns.ZONE
    zone.clear()
    zone.update({
        "fuzz.example TXT": records[:1], "inc.fuzz.example TXT": records[1:2],
        "fuzz.example A": ["192.0.2.10"], "fuzz.example AAAA": ["2001:db8::1"],
        "fuzz.example MX": ["10 mx.fuzz.example"], "mx.fuzz.example A": ["192.0.2.11"],
        "10.2.0.192.in-addr.arpa PTR": ["mx.fuzz.example"],
    })
    if len(records) > 2:
        zone["inc.fuzz.example TXT"] = records[1:]  # more than one record: permerror
    check_spf("192.0.2.10", "alice@fuzz.example", "mx.fuzz.example")


def _mime(data: bytes) -> None:
    from apps.store import mime

    mime.leaf_parts(mime.analyze(data).bodystructure)
    mime.extract_text(data)


def _sanitize(data: bytes) -> None:
    from apps.store import mime
    from apps.webmail import reading, sanitize

    if not mime.starts_with_field(data):
        data = b"Content-Type: text/html; charset=utf-8\r\n\r\n" + data
    structure = mime.analyze(data).bodystructure
    cids = reading.content_ids(structure)
    reading.attachments(structure)
    reading.verdict_badges(reading.header_fields(data, structure))
    body = reading.body_part(structure)
    if body is None:
        return
    part = body[1]
    text = mime.decode_text(mime.part_bytes(data, part), part)
    if part["subtype"] == "html":
        sanitize.has_remote_content(text)
        cleaned = sanitize.clean_html(text, cid_url=lambda cid: cids.get(cid.strip("<>")),
                                      images=len(data) % 2 == 1)
        sanitize.html_to_text(cleaned.html)
    else:
        sanitize.text_to_html(text)


# --- SMTP: sessions over an in-memory transport ------------------------------------


class _MemoryTransport(asyncio.Transport):
    """What aiosmtpd's protocol needs of a transport, without a socket."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.peer = peer
        self.written = bytearray()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


SMTP_LOGIN = ("alice@fuzz.example", "secret-password")
_smtp_loop: asyncio.AbstractEventLoop | None = None  # one per process, for all sessions


async def _smtp_session(data: bytes, submission: bool) -> bytes:
    """One session: the input is sent at once (pipelined), the session runs
    until it has read everything and waits for more, or ends."""
    from apps.smtp.server import InboundHandler, MailhostSMTP
    from apps.smtp.submission import SubmissionHandler, SubmissionSMTP

    if submission:
        protocol: MailhostSMTP = SubmissionSMTP(SubmissionHandler(), listener="submission")
        transport = _MemoryTransport(("127.0.0.1", 40000))  # plaintext AUTH from loopback
    else:
        protocol = MailhostSMTP(InboundHandler(), listener="smtp")
        transport = _MemoryTransport(("192.0.2.1", 40000))
    protocol.connection_made(transport)
    protocol.data_received(data)
    task = protocol._handler_coroutine
    reader = protocol._reader
    idle_polls = 0
    while not task.done() and not transport.closing:
        # The reader waits for more than it has: everything sent was read.
        idle_polls = idle_polls + 1 if reader._waiter is not None else 0
        if idle_polls > 3:
            break  # everything read: the session waits for the client
        await asyncio.sleep(0 if idle_polls else 0.0005)
    if not task.done():
        protocol.connection_lost(None)
    with suppress(asyncio.CancelledError):
        await task
    if protocol.transport is not None:
        protocol.connection_lost(None)
    return bytes(transport.written)


def _smtp(data: bytes) -> None:
    global _smtp_loop
    if _smtp_loop is None or _smtp_loop.is_closed():
        _smtp_loop = asyncio.new_event_loop()
    # Sessions that authenticate go to submission, and one in eight others.
    submission = (b"AUTH" in data[:400].upper()
                  or hashlib.blake2b(data, digest_size=1).digest()[0] < 32)
    try:
        _smtp_loop.run_until_complete(_smtp_session(data, submission))
    except Hang:
        _smtp_loop.close()  # interrupted anywhere: start over with a new loop
        _smtp_loop = None
        raise


def _close_smtp_loop() -> None:
    global _smtp_loop
    if _smtp_loop is not None:
        _smtp_loop.close()
        _smtp_loop = None


def prepare_smtp_directory() -> None:
    """The domain, mailbox and aliases the SMTP inputs name (in the database
    the fuzzing uses)."""
    from apps.directory import services

    domain = services.create_domain("fuzz.example")
    services.create_mailbox(SMTP_LOGIN[0], SMTP_LOGIN[1])
    services.create_mailbox("bob@fuzz.example", "secret-password")
    services.create_alias("info@fuzz.example", ["alice@fuzz.example", "bob@fuzz.example"])
    services.create_alias("fwd@fuzz.example", ["someone@remote.example"])
    del domain


def _corpus_seeds(messages: list[bytes]) -> list[bytes]:
    return messages


def _html_seeds(messages: list[bytes]) -> list[bytes]:
    with_html = [m for m in messages if b"text/html" in m.lower()]
    return HTML_SEEDS + with_html[:400] + messages[:100]


def _nothing(data: bytes) -> None:
    """The reference: the mutator and the harness around an input, no parser."""


TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("reference", _nothing, MIME_TOKENS, _corpus_seeds),
    Target("imap", _imap, IMAP_TOKENS, lambda messages: IMAP_SEEDS + [
        b"x APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n" for m in messages[:20]]),
    Target("pop3", _pop3, POP3_TOKENS, lambda messages: POP3_SEEDS),
    Target("smtp", _smtp, SMTP_TOKENS, lambda messages: _transcripts(SMTP_SEEDS, messages),
           session=True, finish=_close_smtp_loop),
    Target("mime", _mime, MIME_TOKENS, _corpus_seeds),
    Target("dsn", _dsn, DSN_TOKENS, lambda messages: DSN_SEEDS + messages[:50]),
    Target("dmarc", _dmarc, DMARC_TOKENS, lambda messages: DMARC_SEEDS),
    Target("spf", _spf, SPF_TOKENS, lambda messages: SPF_SEEDS),
    Target("sanitize", _sanitize, HTML_TOKENS + MIME_TOKENS, _html_seeds),
)}


# --- running -------------------------------------------------------------------------


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang


@dataclass
class Result:
    """What one batch (or the whole run) of a target found."""

    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    kinds: Counter = field(default_factory=Counter)  # "Type at file:line" -> count
    saved: list[str] = field(default_factory=list)
    peak_rss_kib: int = 0
    baseline_rss_kib: int = 0
    huge_inputs: int = 0
    huge_growth_kib: int = 0  # the largest rise of peak RSS over one ~1 MB input
    cpu_seconds: float = 0.0  # of the worker processes (all their threads)

    def add(self, other: Result) -> None:
        self.inputs += other.inputs
        self.crashes += other.crashes
        self.hangs += other.hangs
        self.kinds.update(other.kinds)
        self.saved += other.saved
        self.peak_rss_kib = max(self.peak_rss_kib, other.peak_rss_kib)
        self.baseline_rss_kib = max(self.baseline_rss_kib, other.baseline_rss_kib)
        self.huge_inputs += other.huge_inputs
        self.huge_growth_kib = max(self.huge_growth_kib, other.huge_growth_kib)
        self.cpu_seconds += other.cpu_seconds


def _where(error: BaseException) -> str:
    """The exception's type and the innermost frame inside the project."""
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, Crash) and error.__cause__ is not None:
        frames = traceback.extract_tb(error.__cause__.__traceback__)
        error = error.__cause__
    ours = [f for f in frames if str(ROOT) in f.filename and "/.venv/" not in f.filename]
    if not frames:
        return type(error).__name__
    frame = (ours or frames)[-1]
    filename = frame.filename.removeprefix(f"{ROOT}/")
    return f"{type(error).__name__} at {filename}:{frame.lineno}"


def _save(target: str, data: bytes, kind: str, error: BaseException, save_dir: Path) -> str:
    folder = save_dir / target
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = folder / f"{kind}-{digest}.bin"
    path.write_bytes(data)
    text = "".join(traceback.format_exception(error))
    path.with_suffix(".txt").write_text(f"{target} {kind}: {_where(error)}\n\n{text}")
    return str(path)


def _run_one(target: Target, data: bytes, result: Result, save_dir: Path,
             max_saved_per_kind: int) -> None:
    _logged.records.clear()
    result.inputs += 1
    try:
        lines = data.count(b"\n") if target.session else 0
        signal.setitimer(signal.ITIMER_PROF, CPU_LIMIT * max(1, lines / 1000))
        try:
            target.run(data)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        _logged.raise_first()
        return
    except Hang as error:
        result.hangs += 1
        failure, kind, found = error, f"hang in {_where(error)}", "hang"
    except Exception as error:
        result.crashes += 1
        failure, kind, found = error, _where(error), "crash"
    result.kinds[kind] += 1
    if result.kinds[kind] <= max_saved_per_kind:
        result.saved.append(_save(target.name, data, found, failure, save_dir))


def run_inputs(target_name: str, inputs: Iterator[bytes], *, save_dir: Path = FUZZ_DIR,
               max_saved_per_kind: int = 5) -> Result:
    """Run inputs through one target in this process, each under the CPU alarm."""
    target = TARGETS[target_name]
    result = Result(baseline_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    started = time.process_time()
    try:
        with _capturing_logs():
            for data in inputs:
                if len(data) < HUGE // 2:
                    _run_one(target, data, result, save_dir, max_saved_per_kind)
                    continue
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                _run_one(target, data, result, save_dir, max_saved_per_kind)
                result.huge_inputs += 1
                growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
                result.huge_growth_kib = max(result.huge_growth_kib, growth)
    finally:
        signal.signal(signal.SIGPROF, previous)
        if target.finish is not None:
            target.finish()
    result.cpu_seconds = time.process_time() - started
    result.peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def mutated_inputs(target_name: str, messages: list[bytes], count: int, seed: int,
                   *, huge_one_in: int = 20000) -> Iterator[bytes]:
    target = TARGETS[target_name]
    mutator = Mutator(random.Random(seed), target.seeds(messages), target.tokens,
                      huge_one_in=huge_one_in)
    seeds = mutator.seeds
    for n in range(count):
        # Every seed once as it is, then mutations.
        yield seeds[n] if n < len(seeds) else mutator.next()


_worker_messages: list[bytes] = []


def seed_messages(corpus: Path, limit: int) -> list[bytes]:
    """The ``limit`` smallest messages of the corpora (mime/, ham/, spam/)."""
    paths = sorted((p for sub in ("mime", "ham", "spam") for p in (corpus / sub).rglob("*")
                    if p.is_file()), key=lambda p: (p.stat().st_size, p))
    return corpus_messages(paths[:limit])


def _worker_init(messages: list[bytes]) -> None:
    global _worker_messages
    _worker_messages = messages
    from django.db import connections

    for connection in connections.all():
        connection.close()  # the parent's: each worker opens its own


def _batch(args: tuple[str, int, int, str]) -> Result:
    target_name, count, seed, save_dir = args
    return run_inputs(target_name, mutated_inputs(target_name, _worker_messages, count, seed),
                      save_dir=Path(save_dir))


def _setup_django(data_dir: Path) -> None:
    """A throwaway instance for the targets that need settings or a database."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "mailhost.settings", "MAILHOST_DATA_DIR": str(data_dir),
        "MAILHOST_LOG_LEVEL": "CRITICAL", "MAILHOST_FAST_PASSWORD_HASHER": "1",
        "MAILHOST_DNS_RESOLVER": "tests.fakedns.FakeResolver",
        # SMTP: DATA files straight into the store (the spool's checks ask DNS),
        # and no limit that would answer every later input the same way.
        "MAILHOST_ANTISPAM": "0", "MAILHOST_MAX_MESSAGE_SIZE": str(2 * HUGE),
        "MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN": "1000000000",
        "MAILHOST_AUTH_MAX_FAILURES_PER_IP": "1000000000",
        "MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR": "1000000000",
    })
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger().handlers.clear()  # what the targets log is captured, not shown
    call_command("migrate", "--no-input", verbosity=0)
    prepare_smtp_directory()


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


HEADER = (f"{'target':9} {'inputs':>9} {'crashes':>7} {'hangs':>5} {'inputs/s':>8} "
          f"{'per CPU-s':>9} {'base MiB':>8} {'peak MiB':>8} {'1MB inputs':>10} "
          f"{'1MB growth MiB':>14}")


def _row(name: str, total: Result, elapsed: float) -> str:
    return (f"{name:9} {total.inputs:>9} {total.crashes:>7} {total.hangs:>5} "
            f"{total.inputs / elapsed:>8.0f} {total.inputs / max(total.cpu_seconds, 1e-9):>9.0f} "
            f"{_mib(total.baseline_rss_kib):>8} {_mib(total.peak_rss_kib):>8} "
            f"{total.huge_inputs:>10} {total.huge_growth_kib / 1024:>14.1f}")


def fuzz_target(name: str, count: int, messages: list[bytes], args: argparse.Namespace) -> str:
    """Run ``count`` inputs through a target on a pool of workers; print the
    running totals after each batch and the kinds of failure at the end."""
    from multiprocessing import get_context

    total = Result()
    started = time.perf_counter()
    batches = [(name, min(args.batch, count - done), args.seed * 7919 + n, str(args.save_dir))
               for n, done in enumerate(range(0, count, args.batch))]
    # A pool per target: each target's peak RSS is its own.
    with get_context("fork").Pool(args.workers, _worker_init, (messages,)) as pool:
        for result in pool.imap_unordered(_batch, batches):
            total.add(result)
            so_far = _row(name, total, time.perf_counter() - started)
            print(f"  {time.strftime('%H:%M:%S')} {so_far}", flush=True)
    row = _row(name, total, time.perf_counter() - started)
    print(f"{HEADER}\n{row}", flush=True)
    for kind, times in total.kinds.most_common():
        print(f"    {times:>7} x {kind}", flush=True)
    for path in total.saved[:20]:
        print(f"    saved {path}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_argument(parser)
    parser.add_argument("--inputs", type=int, default=20000, help="inputs per target")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated, of: {', '.join(TARGETS)}; "
                             "NAME=N gives one its own number of inputs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=5000, help="inputs per worker task")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seeds", type=int, default=1500,
                        help="corpus messages used as seeds (the smallest first)")
    parser.add_argument("--save-dir", type=Path, default=FUZZ_DIR)
    parser.add_argument("--replay", type=Path, help="run one saved input and show its traceback")
    args = parser.parse_args()

    # The database and blobs of the SMTP target in memory when possible: its
    # sessions wait on fsync otherwise, which is not what is being tested.
    shm = Path("/dev/shm")
    tmp = tempfile.TemporaryDirectory(prefix="mailhost-fuzz-",
                                      dir=shm if shm.is_dir() else None)
    _setup_django(Path(tmp.name))
    if args.replay:
        with _capturing_logs():
            TARGETS[args.replay.parent.name].run(args.replay.read_bytes())
            _logged.raise_first()
        print("no exception")
        return

    messages = seed_messages(args.corpus, args.max_seeds)
    print(f"corpus {args.corpus}: {len(messages)} seed messages; {args.workers} workers; "
          f"CPU limit {CPU_LIMIT}s per input", flush=True)
    rows = []
    for spec in args.targets.split(","):
        name, _, count = spec.partition("=")
        rows.append(fuzz_target(name, int(count or args.inputs), messages, args))
    print(f"\n{HEADER}\n" + "\n".join(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
