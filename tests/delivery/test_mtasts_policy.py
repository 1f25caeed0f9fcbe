"""The MTA-STS parsers and MX matching (RFC 8461 §3.1, §3.2, §4.1): pure
functions over bytes and strings, with plain examples and hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.delivery.mtasts import (
    MAX_AGE_LIMIT,
    Policy,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_sts_record,
)

# RFC 8461 §3.2's example.
RFC_EXAMPLE = (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
               b"mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n")


def test_the_rfc_example():
    policy = parse_policy(RFC_EXAMPLE)
    assert policy == Policy("enforce", 604800,
                            ("mail.example.com", "*.example.net", "backupmx.example.com"))
    assert policy.allows("MAIL.example.com.") and policy.allows("mx1.example.net")
    assert not policy.allows("example.net") and not policy.allows("a.b.example.net")
    assert not policy.allows("mail.example.org")


def test_lf_lines_unknown_keys_and_repeated_keys():
    policy = parse_policy(b"version: STSv1\nmode:testing\nfuture_key: anything\n"
                          b"mode: enforce\nmx: MX.Example.ORG.\nmax_age: 9999999999\n\n")
    assert policy.mode == "testing"  # the first of a repeated key
    assert policy.mx == ("mx.example.org",)
    assert policy.max_age == MAX_AGE_LIMIT
    assert parse_policy(b"version: STSv1\r\nmode: none\r\nmax_age: 0\r\n").mx == ()


@pytest.mark.parametrize("data", [
    b"",
    b"mode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n",  # no version
    b"version: STSv2\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n",
    b"version: STSv1\r\nmode: ENFORCE\r\nmx: a.example\r\nmax_age: 1\r\n",  # case-sensitive
    b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: -1\r\n",
    b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 12345678901\r\n",
    b"version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n",  # no mx
    b"version: STSv1\r\nmode: enforce\r\nmx: a.*.example\r\nmax_age: 86400\r\n",
    b"version: STSv1\r\nmode: enforce\r\nmx: localhost\r\nmax_age: 86400\r\n",
    b"version: STSv1\r\nmode enforce\r\nmx: a.example\r\nmax_age: 86400\r\n",  # no colon
    b"<html><body>Not found</body></html>",
    b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\xff\r\n",
])
def test_malformed_policies_are_refused(data):
    with pytest.raises(PolicyError):
        parse_policy(data)


def test_sts_txt_record():
    assert parse_sts_record(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_sts_record(["v=spf1 -all", "v=STSv1;id=abc ; ext=1"]) == "abc"
    for texts in ([], ["v=STSv1; id=a", "v=STSv1; id=b"], ["v=STSv1;"], ["v=STSv1; id="],
                  ["v=STSv1; id=" + "a" * 33], ["v=STSv1; id=a-b"], ["V=STSv1; id=a"]):
        with pytest.raises(PolicyError):
            parse_sts_record(texts)


_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
# A DNS label: letters and digits, a hyphen inside only.
label = st.builds(lambda head, middle: head + ("-" + middle if middle else ""),
                  st.text(_ALNUM, min_size=1, max_size=8), st.text(_ALNUM, max_size=4))
host = st.lists(label, min_size=2, max_size=4).map(".".join)
pattern = st.one_of(host, host.map(lambda h: f"*.{h}"))


@settings(max_examples=60)
@given(mode=st.sampled_from(["enforce", "testing"]), max_age=st.integers(0, 10**10 - 1),
       patterns=st.lists(pattern, min_size=1, max_size=4),
       newline=st.sampled_from([b"\r\n", b"\n"]), spaces=st.sampled_from(["", " ", "  \t"]),
       extra=st.lists(st.tuples(st.text("abcdefgh_", min_size=1, max_size=8),
                                st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                        max_size=20)), max_size=3))
def test_policies_as_servers_write_them_parse_back(mode, max_age, patterns, newline, spaces,
                                                  extra):
    extra = [(k, v) for k, v in extra if k not in ("version", "mode", "max_age", "mx")]
    lines = [f"version:{spaces}STSv1", f"mode:{spaces}{mode}",
             *(f"mx:{spaces}{p}" for p in patterns), *(f"{k}: {v}" for k, v in extra),
             f"max_age:{spaces}{max_age}"]
    data = newline.join(line.encode() for line in lines) + newline
    assert parse_policy(data) == Policy(mode, min(max_age, MAX_AGE_LIMIT), tuple(patterns))


@given(st.binary(max_size=300))
def test_any_bytes_give_a_policy_or_a_policy_error(data):
    try:
        policy = parse_policy(data)
    except PolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT


@settings(max_examples=60)
@given(first=label, second=label, base=host)
def test_a_wildcard_matches_exactly_one_label(first, second, base):
    assert mx_matches(f"*.{base}", f"{first}.{base}")
    assert mx_matches(f"*.{base}", f"{first}.{base}.".upper())
    assert not mx_matches(f"*.{base}", base)
    assert not mx_matches(f"*.{base}", f"{first}.{second}.{base}")
    assert mx_matches(f"{first}.{base}", f"{second}.{base}") == (first == second)
