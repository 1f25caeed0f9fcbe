"""SMTP TLS reporting (RFC 8460): the ``_smtp._tls`` record parser (byte
strings and hypothesis), the report's JSON (§4.4 field names), and end to end:
mail to a domain whose MTA-STS policy is enforce meets an MX without STARTTLS
and one with a certificate for another name; the day's counters say so; the
daily task mails the gzipped report (§5.3) to the domain's rua, a local test
sink, once however often it runs."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import smtplib
from datetime import UTC, date, datetime, timedelta

import hypothesis
import pytest
from django.core.cache import cache
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from apps.delivery import mtasts, tlsrpt
from apps.delivery.models import QueueEntry, TlsReportSent, TlsSessionCount
from apps.delivery.mtasts import Policy
from apps.delivery.tlsrpt import ReportingError, mailto_addresses, parse_record
from apps.directory.dns import dns_records
from apps.directory.models import Domain
from apps.directory.services import create_alias
from tests import fakedns
from tests.delivery import test_mtasts
from tests.delivery.conftest import publish_domain, run_queue
from tests.delivery.receiver import Receiver
from tests.delivery.test_mtasts import send
from tests.delivery.tls_peers import DOMAIN, MX_HOST
from tests.factories import make_mailbox
from tests.smtp.helpers import stored

# test_mtasts's receivers (the CA, policy server and published policy are
# tests/delivery/conftest.py's).
clear_receiver = test_mtasts.clear_receiver

# --- the record (RFC 8460 §3) -----------------------------------------------------


def test_a_record_with_mailto_and_https_uris() -> None:
    assert parse_record([b"v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x"]) == [
        "mailto:tls@example.com", "https://r.example/x"]
    assert parse_record([b"v=TLSRPTv1;rua=mailto:a@b.example , mailto:c@d.example;"]) == [
        "mailto:a@b.example", "mailto:c@d.example"]
    # Other TXT records beside it are discarded; extensions are allowed.
    assert parse_record([b"v=spf1 -all", b"v=TLSRPTv1; ext_1=x.y; rua=mailto:r@e.example"]
                        ) == ["mailto:r@e.example"]


@pytest.mark.parametrize("texts", [
    [],
    [b"v=spf1 -all"],
    [b"v=TLSRPTv1; rua=mailto:a@b.example", b"v=TLSRPTv1; rua=mailto:c@d.example"],
    [b"v=TLSRPTv1"],
    [b"v=TLSRPTv1;"],
    [b"v=TLSRPTv10; rua=mailto:a@b.example"],
    [b"v=TLSRPTv1; ext=1"],  # no rua
    [b"v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example"],
    [b"v=TLSRPTv1; rua=a@b.example"],  # not a URI
    [b"v=TLSRPTv1; rua=mailto:a@b.example,"],
    [b"v=TLSRPTv1; rua=mailto:a\xff@b.example"],
    [b"v=TLSRPTv1; rua=mailto:a@b.example; bad field"],
])
def test_records_that_mean_no_reporting(texts: list[bytes]) -> None:
    with pytest.raises(ReportingError):
        parse_record(texts)


def test_mailto_addresses() -> None:
    assert mailto_addresses(["mailto:a%40x@b.example?subject=x", "https://r.example/",
                             "MAILTO:c@d.example", "mailto:c@d.example", "mailto:nobody"]) == [
        "a@x@b.example", "c@d.example"]


_LOCAL = st.text("abcdefghijklmnopqrstuvwxyz0123456789.+-_", min_size=1, max_size=20)
_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
_DOMAIN = st.lists(_LABEL, min_size=2, max_size=4).map(".".join)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# RFC 8460 §3: tlsrpt-ext-name and tlsrpt-ext-value
_EXTENSION = st.tuples(
    st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM + "_.-", max_size=31)),
    st.text([chr(c) for c in [*range(0x21, 0x3b), 0x3c, *range(0x3e, 0x7f)]],
            min_size=1, max_size=20))
_SPACE = st.sampled_from(["", " ", "\t", "  "])


# Drawing is cheap (milliseconds); on a loaded machine one stalled draw
# would fail the too_slow health check, which says nothing about the parser.
@hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ADDRESS, min_size=1, max_size=4), st.lists(_EXTENSION, max_size=3),
       _SPACE, _SPACE, st.booleans())
def test_any_valid_record_gives_back_its_addresses(
        addresses: list[str], extensions: list[tuple[str, str]], before: str, after: str,
        trailing: bool) -> None:
    extensions = [(name, value) for name, value in extensions if name != "rua"]
    fields = [f"rua={f'{before},{after}'.join('mailto:' + a for a in addresses)}",
              *(f"{name}={value}" for name, value in extensions)]
    record = f"v=TLSRPTv1{before};{after}" + f"{before};{after}".join(fields)
    if trailing:
        record += f"{before};"
    uris = parse_record([b"v=DMARC1; p=none", record.encode()])
    assert mailto_addresses(uris) == list(dict.fromkeys(addresses))


@hypothesis.settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=3))
def test_any_bytes_parse_or_mean_no_reporting(texts: list[bytes]) -> None:
    try:
        uris = parse_record(texts)
    except ReportingError:
        return
    assert uris and all(":" in uri for uri in uris)


# --- the report (RFC 8460 §4.4) ---------------------------------------------------

REPORT_FIELDS = {"organization-name", "date-range", "contact-info", "report-id", "policies"}
POLICY_FIELDS = {"policy-type", "policy-string", "policy-domain", "mx-host"}
SUMMARY_FIELDS = {"total-successful-session-count", "total-failure-session-count"}
DETAIL_FIELDS = {"result-type", "sending-mta-ip", "receiving-mx-hostname",
                 "receiving-mx-helo", "receiving-ip", "failed-session-count",
                 "additional-information", "failure-reason-code"}
RESULT_TYPES = {"starttls-not-supported", "certificate-host-mismatch",
                "certificate-expired", "certificate-not-trusted", "validation-failure",
                "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                "sts-policy-invalid", "sts-webpki-invalid"}


def check_report_fields(report: dict) -> None:
    """Every name is one RFC 8460 §4.4 defines, the required ones are there,
    and the values have the types §4.4 (and its JSON schema, Appendix B) give."""
    assert set(report) == REPORT_FIELDS
    assert set(report["date-range"]) == {"start-datetime", "end-datetime"}
    for moment in report["date-range"].values():
        assert datetime.fromisoformat(moment).tzinfo is not None and moment.endswith("Z")
    for entry in report["policies"]:
        assert set(entry) <= {"policy", "summary", "failure-details"}
        assert {"policy-type", "policy-domain"} <= set(entry["policy"]) <= POLICY_FIELDS
        assert entry["policy"]["policy-type"] in {"tlsa", "sts", "no-policy-found"}
        assert set(entry["summary"]) == SUMMARY_FIELDS
        assert all(isinstance(v, int) for v in entry["summary"].values())
        for detail in entry.get("failure-details", []):
            assert {"result-type", "failed-session-count"} <= set(detail) <= DETAIL_FIELDS
            assert detail["result-type"] in RESULT_TYPES
        assert entry["summary"]["total-failure-session-count"] == sum(
            d["failed-session-count"] for d in entry.get("failure-details", []))


def test_the_report_of_a_days_counters(db) -> None:
    moment = datetime(2026, 3, 4, 12, tzinfo=UTC)
    policy = Policy("enforce", 86400, ("mx1.example.net", "*.mx.example.net"))
    for _ in range(3):
        tlsrpt.count_session(tlsrpt.Session("Example.NET", "mx1.example.net", "success",
                                            "192.0.2.1", "198.51.100.7"), policy, now=moment)
    tlsrpt.count_session(tlsrpt.Session("example.net", "mx1.example.net",
                                        "certificate-expired", "192.0.2.1"), policy, now=moment)
    tlsrpt.count_session(tlsrpt.Session("example.net", "", "sts-policy-fetch-error"), None,
                         sts=True, now=moment)
    tlsrpt.count_session(tlsrpt.Session("example.net", "mx9.example.net", "success"), None,
                         now=moment)
    rows = list(TlsSessionCount.objects.order_by("pk"))
    assert len(rows) == 4  # counters, not a row per session
    report = tlsrpt.build_report(rows, day=date(2026, 3, 4), organization="Mailhost",
                                 contact="tls@ours.example", report_id="r1")
    check_report_fields(report)
    assert report["date-range"] == {"start-datetime": "2026-03-04T00:00:00Z",
                                    "end-datetime": "2026-03-04T23:59:59Z"}
    sts_entry, fetch_entry, none_entry = report["policies"]
    assert sts_entry["policy"] == {
        "policy-type": "sts", "policy-domain": "example.net",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.example.net",
                          "mx: *.mx.example.net", "max_age: 86400"],
        "mx-host": ["mx1.example.net", "*.mx.example.net"]}
    assert sts_entry["summary"] == {"total-successful-session-count": 3,
                                    "total-failure-session-count": 1}
    assert sts_entry["failure-details"] == [{
        "result-type": "certificate-expired", "receiving-mx-hostname": "mx1.example.net",
        "receiving-ip": "192.0.2.1", "failed-session-count": 1}]
    assert fetch_entry["policy"] == {"policy-type": "sts", "policy-domain": "example.net"}
    assert fetch_entry["failure-details"][0]["result-type"] == "sts-policy-fetch-error"
    assert none_entry == {"policy": {"policy-type": "no-policy-found",
                                     "policy-domain": "example.net"},
                          "summary": {"total-successful-session-count": 1,
                                      "total-failure-session-count": 0}}


def test_a_report_to_a_local_address_that_takes_no_mail_waits(db) -> None:
    """A rua at one of our domains that has no such mailbox: that report is
    left for the next run; the others go (here straight into a mailbox)."""
    make_mailbox("alice@example.org")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for domain in ("example.com", "example.net"):
        tlsrpt.count_session(tlsrpt.Session(domain, f"mx.{domain}", "success"), None,
                             now=yesterday)
    fakedns.publish(['_smtp._tls.example.com. 3600 IN TXT '
                     '"v=TLSRPTv1; rua=mailto:alice@example.org"',
                     '_smtp._tls.example.net. 3600 IN TXT '
                     '"v=TLSRPTv1; rua=mailto:nobody@example.org"'])
    assert tlsrpt.send_reports() == 1
    assert list(TlsReportSent.objects.values_list("policy_domain", flat=True)) == [
        "example.com"]
    (filed,) = stored("alice@example.org")
    message, _, report = report_parts(filed)
    assert message["TLS-Report-Domain"] == "example.com"
    assert report["policies"][0]["summary"]["total-successful-session-count"] == 1


# --- end to end ---------------------------------------------------------------------


def report_parts(received: bytes) -> tuple[email.message.EmailMessage, str, dict]:
    message = email.message_from_bytes(received, policy=email.policy.default)
    (attachment,) = [part for part in message.walk()
                     if part.get_content_type() == "application/tlsrpt+gzip"]
    return message, attachment.get_filename(), json.loads(
        gzip.decompress(attachment.get_payload(decode=True)))


def test_failures_under_an_enforced_policy_are_counted_and_reported_once(
        sts, settings, clear_receiver, ca) -> None:
    settings.MAILHOST_TLSRPT_FROM = "tls-reports@example.org"
    settings.MAILHOST_TLSRPT_ORGANIZATION = "Mailhost test"
    publish_domain("example.org")  # its DKIM keys, for the check of the signature
    sts("enforce")
    # An MX that offers no STARTTLS: nothing goes out in clear, and it counts.
    settings.MAILHOST_DELIVERY_PORT = clear_receiver.port
    send()
    run_queue()
    assert QueueEntry.objects.get().last_reply.startswith("451 4.7.4")
    # Then an MX whose certificate names another host, twice.
    bad_name = Receiver(ca.server_context("other.example.net")).start()
    try:
        settings.MAILHOST_DELIVERY_PORT = bad_name.port
        for _ in range(2):
            QueueEntry.objects.update(next_attempt=datetime.now(UTC))
            run_queue()
    finally:
        bad_name.stop()
    assert QueueEntry.objects.get().last_reply.startswith("451 4.7.5")
    assert not clear_receiver.script.messages and not bad_name.script.messages
    today = datetime.now(UTC).date()
    assert sorted(TlsSessionCount.objects.values_list("day", "policy_domain", "policy_type",
                                                      "mx_host", "result", "count")) == [
        (today, DOMAIN, "sts", MX_HOST, "certificate-host-mismatch", 2),
        (today, DOMAIN, "sts", MX_HOST, "starttls-not-supported", 1)]

    # The domain takes reports by mail (and at an https: URI, which we skip).
    fakedns.publish([f'_smtp._tls.{DOMAIN}. 3600 IN TXT "v=TLSRPTv1; '
                     f'rua=https://reports.example.net/tls,mailto:tls@reports.example.net"'])
    sink = Receiver(None).start()
    try:
        settings.MAILHOST_TRANSPORTS = f"reports.example.net=127.0.0.1:{sink.port}"
        # Today is not over: nothing is reported yet.
        assert tlsrpt.send_reports() == 0
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert tlsrpt.send_reports(now=tomorrow) == 1
        assert tlsrpt.send_reports(now=tomorrow) == 0  # run twice: nothing new
        run_queue(now=tomorrow)
    finally:
        sink.stop()
    assert TlsReportSent.objects.count() == 1
    (received,) = [m for m in sink.script.messages
                   if m.recipients == ["tls@reports.example.net"]]
    message, filename, report = report_parts(received.data)
    assert received.mail_from == "<>"  # the null sender: nothing answers a report
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Report-Domain"] == DOMAIN
    assert message["TLS-Report-Submitter"] == "example.org"
    assert message["From"] == "tls-reports@example.org"
    assert message["Subject"] == (f"Report Domain: {DOMAIN} Submitter: example.org "
                                  f"Report-ID: <{report['report-id']}>")
    assert fakedns.dkim_verifies(received.data, 0)
    start = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    assert filename == (f"example.org!{DOMAIN}!{int(start.timestamp())}!"
                        f"{int(start.timestamp()) + 86399}.json.gz")
    check_report_fields(report)
    assert report["organization-name"] == "Mailhost test"
    assert report["contact-info"] == "tls-reports@example.org"
    (entry,) = report["policies"]
    assert entry["policy"]["policy-type"] == "sts"
    assert entry["policy"]["mx-host"] == [MX_HOST]
    assert "mode: enforce" in entry["policy"]["policy-string"]
    assert entry["summary"] == {"total-successful-session-count": 0,
                                "total-failure-session-count": 3}
    assert sorted(entry["failure-details"], key=lambda d: d["result-type"]) == [
        {"result-type": "certificate-host-mismatch", "receiving-mx-hostname": MX_HOST,
         "receiving-ip": "127.0.0.1", "failed-session-count": 2},
        {"result-type": "starttls-not-supported", "receiving-mx-hostname": MX_HOST,
         "receiving-ip": "127.0.0.1", "failed-session-count": 1}]


def test_an_unlisted_mx_and_a_policy_that_cannot_be_fetched_are_counted(
        sts, settings, clear_receiver, policy_server) -> None:
    settings.MAILHOST_DELIVERY_PORT = clear_receiver.port
    sts("enforce", mx="*.mail.example.net")  # mx.example.net is not listed
    send()
    run_queue()
    assert QueueEntry.objects.get().last_reply.startswith("451 4.7.0")
    # Once the cached policy is gone (its max_age over), a new policy id, and
    # the policy host answers 404: no policy to apply (RFC 8461 §5).
    cache.delete(mtasts._cache_key(DOMAIN))
    fakedns.ZONE[fakedns.key(f"_mta-sts.{DOMAIN}", "TXT")] = ["v=STSv1; id=second"]
    policy_server.policy = b""
    QueueEntry.objects.update(next_attempt=datetime.now(UTC))
    run_queue()
    assert sorted(TlsSessionCount.objects.values_list("policy_type", "mx_host", "result",
                                                      "count")) == [
        ("no-policy-found", MX_HOST, "starttls-not-supported", 1),  # then sent in clear
        ("sts", "", "sts-policy-fetch-error", 1),
        ("sts", MX_HOST, "validation-failure", 1)]


def test_testing_mode_checks_and_counts_but_delivers(sts, settings, ca, caplog) -> None:
    """RFC 8461 §5: a testing policy is checked as an enforced one, for the
    report; the mail goes all the same."""
    bad_name = Receiver(ca.server_context("other.example.net")).start()
    try:
        settings.MAILHOST_DELIVERY_PORT = bad_name.port
        sts("testing")
        send()
        run_queue()
    finally:
        bad_name.stop()
    assert not QueueEntry.objects.exists()
    (received,) = bad_name.script.messages
    assert received.tls  # opportunistic TLS, as without a policy
    assert "failed TLS (certificate-host-mismatch); delivering all the same" in caplog.text
    assert list(TlsSessionCount.objects.values_list("policy_type", "mx_host", "result",
                                                    "count")) == [
        ("sts", MX_HOST, "certificate-host-mismatch", 1)]


def test_a_report_sent_to_the_address_we_publish_lands_in_its_mailbox(
        smtp_port: int, transactional_db) -> None:
    """Inbound: the rua of the _smtp._tls record we publish (postmaster@, an
    alias here, as RFC 5321 §4.5.1 wants it to exist) takes a report over our
    MX, and the report is filed whole."""
    ann = make_mailbox("ann@ours.example")
    create_alias("postmaster@ours.example", [ann.address])
    (record,) = [r for r in dns_records(Domain.objects.get(name="ours.example"),
                                        mail_host="mail.ours.example")
                 if r.name.startswith("_smtp._tls.")]
    (address,) = mailto_addresses(parse_record([record.value.encode()]))
    assert address == "postmaster@ours.example"
    report = tlsrpt.build_report([], day=date(2026, 3, 4), organization="Remote sender",
                                 contact="tls@remote.example", report_id="r-1")
    data = tlsrpt.build_report_message(report, policy_domain="ours.example",
                                       sender="tls@remote.example", recipients=[address],
                                       now=datetime(2026, 3, 5, tzinfo=UTC))
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.ehlo("mx.remote.example")
        assert client.sendmail("", [address], data) == {}
    (got,) = stored(ann.address)
    _, filename, filed_report = report_parts(got)
    assert filed_report == report
    assert filename == "remote.example!ours.example!1772582400!1772668799.json.gz"
