"""SMTP TLS reporting (RFC 8460) for our outbound mail.

Every connection the outbound queue opens to a domain's MX counts its TLS
outcome (``count_session``) in a per-day counter (TlsSessionCount): success,
or why TLS failed in the words of §4.3. Once a day ``send_reports`` turns the
counters of each finished day into one JSON report per domain (§4.4),
gzipped, and mails it (§5.3) to each ``rua=mailto:`` of the domain's
``_smtp._tls`` TXT record (§3), DKIM-signed and through the outbound queue.
``https:`` report URIs (§5.2) are not used: such reports are skipped.

``parse_record``, ``mailto_addresses``, ``result_of_verify_code``,
``build_report`` and ``build_report_message`` are pure.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from urllib.parse import unquote

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.delivery.models import TlsReportSent, TlsSessionCount
from apps.delivery.mtasts import Policy
from mailhost.dns import DnsTemporaryError, query
from mailhost.errors import MailhostError

log = logging.getLogger("mailhost.delivery")

SUCCESS = "success"
# RFC 8460 §4.3.1 (negotiation failures) and §4.3.2.2 (MTA-STS policy failures).
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"

# RFC 8460 §4.4 policy-type values we report.
STS = "sts"
NO_POLICY = "no-policy-found"

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) as RFC 8460 §4.3.1 names them.
_VERIFY_RESULTS = {
    10: CERTIFICATE_EXPIRED,  # X509_V_ERR_CERT_HAS_EXPIRED
    62: CERTIFICATE_HOST_MISMATCH,  # X509_V_ERR_HOSTNAME_MISMATCH
    2: CERTIFICATE_NOT_TRUSTED,  # UNABLE_TO_GET_ISSUER_CERT
    18: CERTIFICATE_NOT_TRUSTED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: CERTIFICATE_NOT_TRUSTED,  # SELF_SIGNED_CERT_IN_CHAIN
    20: CERTIFICATE_NOT_TRUSTED,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: CERTIFICATE_NOT_TRUSTED,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
}


def result_of_verify_code(code: int) -> str:
    """The RFC 8460 §4.3.1 result type of a failed certificate check."""
    return _VERIFY_RESULTS.get(code, VALIDATION_FAILURE)


# --- the _smtp._tls record (RFC 8460 §3) ----------------------------------------

class ReportingError(ValueError):
    """No usable TLSRPT record: the domain takes no reports (§3)."""


_VERSION = b"v=TLSRPTv1"
_FIELD_DELIMITER = re.compile(rb"[ \t]*;[ \t]*")
_FINAL_DELIMITER = re.compile(rb"[ \t]*;[ \t]*\Z")
_URI_DELIMITER = re.compile(rb"[ \t]*,[ \t]*")
# tlsrpt-ext-name and tlsrpt-ext-value
_EXTENSION_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXTENSION_VALUE = re.compile(rb"[\x21-\x3a\x3c\x3e-\x7e]+")
# A URI (RFC 3986) as far as we need: a scheme, then printable ASCII that is
# no delimiter of the record (§3: "," and ";" in a URI are %-encoded).
_URI = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")


def parse_record(texts: Sequence[bytes]) -> list[str]:
    """The report URIs (``rua``) of a domain's ``_smtp._tls`` TXT records.

    RFC 8460 §3: records not beginning with "v=TLSRPTv1" are discarded; there
    must be exactly one left, and it must parse (tlsrpt-record), with a rua
    field. Otherwise ReportingError: the domain does not take reports."""
    records = [text for text in texts if text.startswith(_VERSION)]
    if len(records) != 1:
        raise ReportingError(f"{len(records)} v=TLSRPTv1 records")
    record = _FINAL_DELIMITER.sub(b"", records[0], count=1)  # [field-delim]
    version, *fields = _FIELD_DELIMITER.split(record)
    if version != _VERSION or not fields:
        raise ReportingError("the record is not v=TLSRPTv1; followed by fields")
    uris: list[str] | None = None
    for field in fields:
        name, equals, value = field.partition(b"=")
        if name == b"rua" and equals:
            if uris is not None:
                raise ReportingError("rua given twice")
            parts = _URI_DELIMITER.split(value)
            if not all(_URI.fullmatch(part) for part in parts):
                raise ReportingError(f"rua {value[:80]!r} is not a list of URIs")
            uris = [part.decode("ascii") for part in parts]
        elif not (equals and _EXTENSION_NAME.fullmatch(name)
                  and _EXTENSION_VALUE.fullmatch(value)):
            raise ReportingError(f"{field[:80]!r} is not a name=value field")
    if uris is None:
        raise ReportingError("no rua field")
    return uris


def mailto_addresses(uris: Iterable[str]) -> list[str]:
    """The addresses of the ``mailto:`` URIs (RFC 6068: %-encoded, query
    after "?"), in order, without repeats; other schemes are left out."""
    addresses: list[str] = []
    for uri in uris:
        scheme, _, rest = uri.partition(":")
        if scheme.lower() != "mailto":
            continue
        for address in unquote(rest.partition("?")[0]).split(","):
            address = address.strip()
            local, at, domain = address.rpartition("@")
            if at and local and "." in domain and address not in addresses:
                addresses.append(address)
    return addresses


# --- counting (called by the outbound queue for every connection) ---------------


@dataclass(frozen=True)
class Session:
    """One outbound connection attempt, as far as TLS reporting cares."""

    policy_domain: str
    mx_host: str
    result: str
    receiving_ip: str = ""
    sending_ip: str = ""


def policy_lines(policy: Policy) -> list[str]:
    """RFC 8460 §4.4 policy-string for an MTA-STS policy: its lines (RFC 8461 §3.2)."""
    return ["version: STSv1", f"mode: {policy.mode}", *(f"mx: {mx}" for mx in policy.mx),
            f"max_age: {policy.max_age}"]


def count_session(session: Session, policy: Policy | None, *, sts: bool = False,
                  now: datetime | None = None) -> None:
    """Add one to the day's counter of this outcome: one UPDATE, and an
    INSERT the first time of the day. ``sts``: an MTA-STS policy failure
    without a policy to name (it could not be fetched)."""
    policy_type = STS if policy is not None or sts else NO_POLICY
    key = {"day": (now or timezone.now()).astimezone(UTC).date(),
           "policy_domain": session.policy_domain.lower().rstrip("."),
           "policy_type": policy_type, "mx_host": session.mx_host.lower().rstrip("."),
           "receiving_ip": session.receiving_ip, "sending_ip": session.sending_ip,
           "result": session.result}
    policy_string = "\n".join(policy_lines(policy)) if policy is not None else ""
    try:
        with transaction.atomic():
            if TlsSessionCount.objects.filter(**key).update(
                    count=F("count") + 1, policy_string=policy_string):
                return
            TlsSessionCount.objects.create(**key, policy_string=policy_string, count=1)
    except IntegrityError:  # another worker inserted it first
        TlsSessionCount.objects.filter(**key).update(count=F("count") + 1)


# --- the report (RFC 8460 §4) ----------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(rows: Sequence[TlsSessionCount], *, day: date, organization: str,
                 contact: str, report_id: str) -> dict[str, object]:
    """The RFC 8460 §4.4 report of one domain's counters of ``day``: a policy
    entry per policy applied, with its summary and failure details."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    policies: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        entry = policies.get((row.policy_domain, row.policy_type, row.policy_string))
        if entry is None:
            policy: dict[str, object] = {"policy-type": row.policy_type,
                                         "policy-domain": row.policy_domain}
            if row.policy_string:
                lines = row.policy_string.split("\n")
                policy["policy-string"] = lines
                policy["mx-host"] = [line.removeprefix("mx: ") for line in lines
                                     if line.startswith("mx: ")]
            entry = policies[row.policy_domain, row.policy_type, row.policy_string] = {
                "policy": policy,
                "summary": {"total-successful-session-count": 0,
                            "total-failure-session-count": 0},
                "failure-details": []}
        if row.result == SUCCESS:
            entry["summary"]["total-successful-session-count"] += row.count
            continue
        entry["summary"]["total-failure-session-count"] += row.count
        detail: dict[str, object] = {"result-type": row.result}
        if row.sending_ip:
            detail["sending-mta-ip"] = row.sending_ip
        if row.mx_host:
            detail["receiving-mx-hostname"] = row.mx_host
        if row.receiving_ip:
            detail["receiving-ip"] = row.receiving_ip
        detail["failed-session-count"] = row.count
        entry["failure-details"].append(detail)
    for entry in policies.values():
        if not entry["failure-details"]:
            del entry["failure-details"]
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _rfc3339(start),
                       "end-datetime": _rfc3339(start + timedelta(days=1, seconds=-1))},
        "contact-info": contact,
        "report-id": report_id,
        "policies": list(policies.values()),
    }


def build_report_message(report: dict, *, policy_domain: str, sender: str,
                         recipients: Sequence[str], now: datetime) -> bytes:
    """RFC 8460 §5.3: a multipart/report (report-type "tlsrpt") with a line for
    people and the report as application/tlsrpt+gzip, named as §5.1 says."""
    submitter = sender.rpartition("@")[2]
    begin_ts, end_ts = (int(datetime.fromisoformat(report["date-range"][edge]).timestamp())
                        for edge in ("start-datetime", "end-datetime"))
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = (f"Report Domain: {policy_domain} Submitter: {submitter} "
                          f"Report-ID: <{report['report-id']}>")
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=submitter)
    message["TLS-Report-Domain"] = policy_domain
    message["TLS-Report-Submitter"] = submitter
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5: nothing replies to it
    message.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {submitter} about mail sent "
        f"to {policy_domain} from {report['date-range']['start-datetime']} to "
        f"{report['date-range']['end-datetime']}.\n")
    compressed = gzip.compress(json.dumps(report, indent=1).encode(), mtime=0)
    message.add_attachment(
        compressed, maintype="application", subtype="tlsrpt+gzip",
        filename=f"{submitter}!{policy_domain}!{begin_ts}!{end_ts}.json.gz")
    message.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"; '
                           f'boundary="{message.get_boundary()}"')
    return message.as_bytes()


def report_sender() -> str:
    return settings.MAILHOST_TLSRPT_FROM or f"tls-reports@{settings.MAILHOST_HOSTNAME}"


def report_addresses(domain: str) -> list[str]:
    """The mailto: report addresses the domain publishes; [] when it takes
    none. DnsTemporaryError when DNS cannot tell now."""
    texts = query(f"_smtp._tls.{domain}", "TXT")
    try:
        uris = parse_record([text.encode("utf-8") for text in texts])
    except ReportingError as error:
        log.debug("no TLS reports for %s: %s", domain, error)
        return []
    skipped = [uri for uri in uris if not uri.lower().startswith("mailto:")]
    if skipped:
        log.info("TLS report URIs of %s not used (mailto: only): %s", domain,
                 ", ".join(skipped))
    return mailto_addresses(uris)


def send_reports(*, now: datetime | None = None) -> int:
    """Report every finished (UTC) day not reported yet, one mail per domain
    that publishes report addresses; returns how many were queued. Safe to
    run twice, at once too: each report's TlsReportSent row is created in the
    transaction that queues it, and a second one cannot be."""
    # services imports this module for count_session.
    from apps.delivery.services import RecipientSpec, sign, submit

    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    pending = (TlsSessionCount.objects.filter(day__lt=today)
               .values_list("day", "policy_domain").distinct().order_by("day",
                                                                        "policy_domain"))
    done = set(TlsReportSent.objects.filter(day__lt=today).values_list("day",
                                                                       "policy_domain"))
    sent = 0
    sender = report_sender()
    for day, domain in pending:
        if (day, domain) in done:
            continue
        try:
            addresses = report_addresses(domain)
        except DnsTemporaryError as error:
            log.info("TLS report of %s for %s waits: %s", domain, day, error)
            continue  # the next run tries again
        report_id = f"{day.isoformat()}.{uuid.uuid4()}@{sender.rpartition('@')[2]}"
        try:
            with transaction.atomic():
                TlsReportSent.objects.create(day=day, policy_domain=domain,
                                             report_id=report_id,
                                             recipients="\n".join(addresses))
                if not addresses:
                    continue
                rows = list(TlsSessionCount.objects.filter(day=day, policy_domain=domain)
                            .order_by("pk"))
                report = build_report(rows, day=day, organization=(
                    settings.MAILHOST_TLSRPT_ORGANIZATION or settings.MAILHOST_HOSTNAME),
                    contact=sender, report_id=report_id)
                data = build_report_message(report, policy_domain=domain, sender=sender,
                                            recipients=addresses, now=now)
                data = sign(data, sender.rpartition("@")[2].lower())
                submit(sender="", recipients=[RecipientSpec(a) for a in addresses],
                       data=data)
        except IntegrityError:
            continue  # another run made this report
        except MailhostError as error:  # a local rua address that takes no mail
            log.warning("TLS report of %s for %s not sent: %s", domain, day, error.message)
            continue  # the next run tries again
        log.info("TLS report of %s for %s queued to %s", domain, day, ", ".join(addresses))
        sent += 1
    # Counters and the record of reports sent are kept a while, then dropped.
    keep_from = today - timedelta(days=settings.MAILHOST_TLSRPT_KEEP_DAYS)
    TlsSessionCount.objects.filter(day__lt=keep_from).delete()
    TlsReportSent.objects.filter(day__lt=keep_from).delete()
    return sent
