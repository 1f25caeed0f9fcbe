"""MAIL and RCPT address parsing (apps/smtp/server.py ``_getaddr``): the fast
path for the plain ``<local@domain>`` form answers as aiosmtpd's parser does."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import example, given
from hypothesis import strategies as st

from apps.smtp.server import MailhostSMTP


def _parsers(local_part_limit: int) -> tuple[MailhostSMTP, SMTP]:
    ours, theirs = object.__new__(MailhostSMTP), object.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = local_part_limit
    return ours, theirs


_PIECES = ["<", ">", "@", ".", " ", "(", ")", "a", "B", "7", "-", "+", "=", "SIZE=10",
           "x.example", "[1.2.3.4]", "\"q\"", "é", ",", ":", "\udcff"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
       st.sampled_from([0, 3, 64]))
@example("<alice@example.org>", 0)
@example("<alice@example.org> SIZE=10240 BODY=8BITMIME", 0)
@example("<a.b+tag@x-y.example>  NOTIFY=NEVER", 0)
@example("<alice@example.org> (comment)", 0)
@example("<alice@example.org>", 3)
@example("<a..b@example.org>", 0)
@example("<alice@example.org> SIZE=\udcff", 0)
def test_the_plain_path_parses_as_aiosmtpd_does(arg, local_part_limit):
    ours, theirs = _parsers(local_part_limit)
    try:
        expected = SMTP._getaddr(theirs, arg)
    except (IndexError, AttributeError):  # the holes MailhostSMTP closes
        expected = (None, None)
    if "\udcff" in arg:  # a byte that is not UTF-8 (RFC 6531 §3.3): refused
        expected = (None, None)
    assert ours._getaddr(arg) == expected
