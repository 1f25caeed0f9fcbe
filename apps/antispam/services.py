"""The inbound spool and the after-DATA checks that file its messages.

``spool_batch`` makes accepted messages durable (blobs, then their spool
rows in one commit: the SMTP server's group commit) before the SMTP server
answers 250, and hands them to ``schedule_checks`` on commit.
``file_spooled`` runs the checks and delivers the message with its verdict
headers into INBOX or Junk, deleting the spool row in the same transaction.
When the checks fail or take longer than MAILHOST_ANTISPAM_TIMEOUT the
message is delivered unfiled, and
``sweep_spool`` (a periodic task) delivers whatever a dead or absent worker
left behind: mail is never lost, nor stuck behind the filter.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.antispam import auth, bayes, learning, phishing
from apps.antispam.headers import (
    HeaderFacts,
    header_facts,
    insert_after_first_field,
    strip_fields,
)
from apps.antispam.models import SpooledMessage
from apps.delivery.filing import (
    MailboxPlan,
    MailParameters,
    queue_redirects,
    route,
    send_replies,
)
from apps.directory.models import Mailbox
from apps.store import mime, trace
from apps.store import services as store
from apps.store.blobs import get_blob_store
from apps.store.models import TraceEvent, TraceKind
from apps.store.services import DeliveryRequest
from mailhost.compiled import CompiledInsert
from mailhost.errors import OverQuota

log = logging.getLogger(__name__)

# Rule points added to 10 × the classifier's probability (SpamAssassin style:
# the score is a sum, the mailbox's threshold decides Junk).
RULE_POINTS = {
    "SPF_FAIL": 2.0,
    "SPF_SOFTFAIL": 1.0,
    "DKIM_INVALID": 1.0,
    "DMARC_FAIL": 2.0,
    "MISSING_DATE": 1.0,
    "MISSING_MESSAGE_ID": 1.0,
    "MISSING_FROM": 2.5,
    "MULTIPLE_FROM": 2.5,
    "FORGED_LOCAL_SENDER": 3.0,
    **phishing.RULE_POINTS,
}
# What each test means, for the webmail's "why is this in Junk".
RULE_DESCRIPTIONS = {
    "SPF_FAIL": "The sending server is not allowed to send for the envelope sender (SPF)",
    "SPF_SOFTFAIL": "The envelope sender's domain doubts the sending server (SPF softfail)",
    "DKIM_INVALID": "Its DKIM signature is broken",
    "DMARC_FAIL": "It fails the DMARC policy its From domain publishes",
    "MISSING_DATE": "It has no Date",
    "MISSING_MESSAGE_ID": "It has no Message-ID",
    "MISSING_FROM": "It has no From",
    "MULTIPLE_FROM": "It names several senders in From",
    "FORGED_LOCAL_SENDER": "It claims to come from one of our domains, "
                           "but came from outside without proof (SPF or DKIM)",
    **phishing.DESCRIPTIONS,
}


# --- spool --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpFacts:
    """What the SMTP session learnt, kept with the spooled message."""

    client_ip: str
    helo: str
    mail_from: str
    spf: auth.SpfResult | None
    authenticated: bool = False
    queue_id: str = ""
    parameters: MailParameters = field(default_factory=MailParameters)  # for redirects


@dataclass
class SpoolRequest:
    """One accepted message for the spool, with its SMTP acceptance to trace."""

    data: bytes
    mailbox_ids: list[int]
    facts: SmtpFacts
    trace_events: Sequence[TraceEvent] = ()
    # The recipients' rows when the caller holds them already (the SMTP
    # session resolved them at RCPT): their quotas need no query then.
    mailboxes: Sequence[Mailbox] = ()


def spool_batch(requests: Sequence[SpoolRequest]) -> list[int | OverQuota]:
    """Spool several messages with one round of blob fsyncs (blobs, then their
    directories) and then one commit; the checks are scheduled on commit.

    Returns one entry per request: the spool row's pk, or OverQuota when a
    recipient's mailbox cannot take the message, as direct delivery would
    refuse it, since after the 250 nothing may be refused."""
    mailboxes = {m.pk: m for r in requests for m in r.mailboxes}
    if missing := {mid for r in requests for mid in r.mailbox_ids} - mailboxes.keys():
        mailboxes.update(Mailbox.objects.in_bulk(missing))
    # One query for the batch: a mailbox with room for the largest message has
    # room for each; only the others are looked at message by message.
    tight = {m.pk for m in store.mailboxes_over_quota(
        list(mailboxes.values()), max(len(r.data) for r in requests))}
    refusals: list[OverQuota | None] = []
    for request in requests:
        full = store.mailboxes_over_quota(
            [mailboxes[mid] for mid in request.mailbox_ids if mid in tight],
            len(request.data)) if tight else []
        refusals.append(OverQuota(f"Mailbox over quota: {', '.join(m.address for m in full)}")
                        if full else None)
    accepted = [r for r, refusal in zip(requests, refusals, strict=True) if refusal is None]
    pks = _spool_rows(accepted) if accepted else []
    spooled = iter(pks)
    return [refusal if refusal is not None else next(spooled) for refusal in refusals]


def _spool_rows(requests: list[SpoolRequest]) -> list[int]:
    """Blobs fsynced, then the rows and the trace in one commit; their pks.
    The fsyncs come before the transaction: no database lock is held meanwhile
    (SQLite has one writer at a time)."""
    blobs = store.write_blobs([request.data for request in requests], parse=False)
    with transaction.atomic():
        store.add_blob_rows(blobs)
        rows = [
            SpooledMessage(
                blob_id=blob.sha256, mailbox_ids=request.mailbox_ids,
                client_ip=request.facts.client_ip, helo=request.facts.helo[:255],
                mail_from=request.facts.mail_from[:320],
                spf_result=request.facts.spf.result if request.facts.spf else "",
                spf_explanation=(request.facts.spf.explanation[:500]
                                 if request.facts.spf else ""),
                authenticated=request.facts.authenticated, queue_id=request.facts.queue_id,
                require_tls=request.facts.parameters.require_tls,
                binarymime=request.facts.parameters.binarymime)
            for blob, request in zip(blobs, requests, strict=True)]
        _insert_spooled.insert(rows)
        trace.record([event for request in requests for event in request.trace_events])
        pks = [row.pk for row in rows]
        if not settings.MAILHOST_ANTISPAM_INLINE:
            transaction.on_commit(lambda: schedule_checks(pks))
    return pks


_insert_spooled = CompiledInsert(SpooledMessage, return_pks=True)


def spool_message(data: bytes, mailbox_ids: list[int], facts: SmtpFacts, *,
                  trace_events: Sequence[TraceEvent] = ()) -> int:
    """One message through ``spool_batch``: its pk, or OverQuota raised."""
    (result,) = spool_batch([SpoolRequest(data, mailbox_ids, facts, trace_events)])
    if isinstance(result, OverQuota):
        raise result
    return result


# --- checks -------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checks found; per-mailbox scores because models are per user."""

    auth_header: bytes
    tests: list[str]
    rule_points: float
    quarantine: bool  # DMARC asked for quarantine or reject: never INBOX
    bayes: dict[int | None, bayes.Score | None] = field(default_factory=dict)
    # The authentication results in short, for the message trace.
    results: dict[str, object] = field(default_factory=dict)
    # ``mime.analyze`` of the spooled bytes: the rules read it, and the store
    # files the blob's parsed row from it (one parse per message, not two).
    analysis: mime.MessageInfo | None = field(default=None, repr=False)

    def score(self, mailbox_id: int) -> float:
        points = self.rule_points
        result = self.bayes.get(mailbox_id)
        if result is not None:
            points += 10 * result.probability
        return round(points, 1)


def _spf_of(row: SpooledMessage) -> auth.SpfResult:
    domain = (row.mail_from or f"postmaster@{row.helo}").rpartition("@")[2].lower()
    return auth.SpfResult(row.spf_result or "none", row.spf_explanation, domain)


def _sample(data: bytes) -> float:
    """DMARC pct= sampling, stable per message so a re-check decides alike."""
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big") / 2**32


@dataclass(frozen=True)
class _Authentication:
    """The sender authentication of one message: DKIM, DMARC and the ARC chain."""

    dkim: list[auth.DkimResult]
    from_domains: list[str]  # sorted, distinct
    dmarc: auth.DmarcResult
    arc: str


def _authenticate(data: bytes, spf: auth.SpfResult, facts: HeaderFacts) -> _Authentication:
    dkim_results = auth.verify_dkim(data)
    from_domains = sorted(set(facts.from_domains))
    dmarc = auth.evaluate_dmarc(from_domains[0] if len(from_domains) == 1 else "",
                                spf, dkim_results, sample=_sample(data))
    return _Authentication(dkim_results, from_domains, dmarc, auth.verify_arc(data))


def with_authentication_results(
    data: bytes, *, client_ip: str, helo: str, mail_from: str, spf: auth.SpfResult | None,
) -> bytes:
    """``data`` (with our Received field first) with our Authentication-Results
    field below that, and none claiming to be ours from elsewhere (RFC 8601
    §5): for a message forwarded as it comes in, before the spool's checks,
    so that its ARC seal vouches for what we found (RFC 8617 §4.1.1). SPF as
    checked at MAIL FROM, or now if it was not."""
    spf = spf or auth.check_spf(client_ip, mail_from, helo)
    found = _authenticate(data, spf, header_facts(data))
    return insert_after_first_field(strip_fields(data, _is_ours), _authentication_results(
        mail_from, helo, spf, found.dkim, found.dmarc, found.arc))


@dataclass
class _Examined:
    """One message's checks up to the database reads, which ``_verdicts``
    makes once for a batch of messages."""

    row: SpooledMessage
    spf: auth.SpfResult
    found: _Authentication
    tests: list[str]
    verified: bool  # the From domain is proven (or the sender authenticated)
    analysis: mime.MessageInfo
    phishing: phishing.Examined
    tokens: set[str]


def _examine(row: SpooledMessage, data: bytes, *, site: phishing.Site) -> _Examined:
    """``site``: ``phishing.site_facts()``, read once for a batch of messages."""
    spf = _spf_of(row)
    facts = header_facts(data)
    found = _authenticate(data, spf, facts)
    dkim_results, from_domains, dmarc = found.dkim, found.from_domains, found.dmarc
    tests: list[str] = []
    if not from_domains:
        tests.append("MISSING_FROM")
    elif len(from_domains) > 1:
        tests.append("MULTIPLE_FROM")  # RFC 7489 §6.6.1: no single From domain
    if not facts.has_date:
        tests.append("MISSING_DATE")
    if not facts.has_message_id:
        tests.append("MISSING_MESSAGE_ID")
    if spf.result in ("fail", "softfail"):
        tests.append(f"SPF_{spf.result.upper()}")
    if dkim_results and not any(r.result == "pass" for r in dkim_results) and any(
            r.result in ("fail", "permerror") for r in dkim_results):
        tests.append("DKIM_INVALID")
    if dmarc.result == "fail":
        tests.append("DMARC_FAIL")
    verified = row.authenticated or dmarc.result == "pass" or _aligned_pass(
        spf, dkim_results, from_domains)
    if not verified and not site.hosted_domains.isdisjoint(from_domains):
        tests.append("FORGED_LOCAL_SENDER")  # our own domain, from outside, unproven
    analysis = mime.analyze(data)
    return _Examined(row, spf, found, tests, verified, analysis,
                     phishing.examine(data, authenticated=row.authenticated, site=site,
                                      info=analysis),
                     bayes.tokenize(data))


def _verdict(examined: _Examined, lookups: phishing.Lookups, models: list[learning.ModelRow],
             *, site: phishing.Site) -> Verdict:
    row, spf, found = examined.row, examined.spf, examined.found
    tests = examined.tests + phishing.check(
        examined.phishing, lookups, authenticated=row.authenticated,
        from_verified=examined.verified, site=site)
    scores = learning.classify_tokens(examined.tokens, row.mailbox_ids, models=models)
    return Verdict(
        auth_header=_authentication_results(row.mail_from, row.helo, spf, found.dkim,
                                            found.dmarc, found.arc),
        tests=tests, rule_points=sum(RULE_POINTS[t] for t in tests),
        quarantine=found.dmarc.policy in ("quarantine", "reject"),
        bayes=scores,
        results={"spf": spf.result, "dmarc": found.dmarc.result,
                 "dkim": [f"{r.result} ({r.domain})" for r in found.dkim] or ["none"]},
        analysis=examined.analysis)


def _verdicts(examined: Sequence[_Examined | None], *, site: phishing.Site
              ) -> list[Verdict | None]:
    """The verdicts of examined messages (None where the examination failed,
    and then filed unchecked), after the database reads of their rules and
    classifier made once for them all: the phishing tables and the
    classifier's model revisions, as of this batch."""
    done = [e for e in examined if e is not None]
    try:
        lookups = phishing.look_up([e.phishing for e in done], site=site)
        models = learning.model_rows({m for e in done for m in e.row.mailbox_ids})
    except Exception:
        log.exception("checks failed spool=%s: delivering unfiled", [e.row.pk for e in done])
        return [None] * len(examined)
    verdicts: list[Verdict | None] = []
    for one in examined:
        try:
            verdicts.append(_verdict(one, lookups, models, site=site) if one else None)
        except Exception:
            log.exception("checks failed spool=%s: delivering unfiled", one and one.row.pk)
            verdicts.append(None)
    return verdicts


def _aligned_pass(spf: auth.SpfResult, dkim_results: list[auth.DkimResult],
                  from_domains: list[str]) -> bool:
    """SPF or DKIM passed for a From domain (relaxed alignment, RFC 7489 §3.1),
    whether or not that domain publishes DMARC."""
    passed = [r.domain for r in dkim_results if r.result == "pass"]
    if spf.result == "pass":
        passed.append(spf.domain)
    return any(auth.aligned(p, d, "r") for p in passed for d in from_domains)


def _authentication_results(mail_from: str, helo: str, spf: auth.SpfResult,
                            dkim_results: list[auth.DkimResult],
                            dmarc: auth.DmarcResult, arc: str) -> bytes:
    """RFC 8601 §2.2; one resinfo per method (per signature for DKIM)."""
    # Imported by the workers that check mail: a listener (checks off inline)
    # imports this module only to spool.
    import authres
    import authres.arc
    import authres.dmarc

    results: list[object] = [authres.SPFAuthenticationResult(
        result=spf.result, smtp_mailfrom=mail_from or None,
        smtp_helo=None if mail_from else helo or None)]
    if dkim_results:
        results += [authres.DKIMAuthenticationResult(
            result=r.result, header_d=r.domain or None, header_s=r.selector or None)
            for r in dkim_results]
    else:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    results.append(authres.dmarc.DMARCAuthenticationResult(
        result=dmarc.result, header_from=dmarc.from_domain or None,
        policy=dmarc.requested or None))
    if arc != "none":
        results.append(authres.arc.ARCAuthenticationResult(result=arc))
    header = authres.AuthenticationResultsHeader(
        authserv_id=settings.MAILHOST_HOSTNAME, results=results)
    return _fold(str(header)).encode("utf-8", "replace") + b"\r\n"


def _fold(field_line: str) -> str:
    """Fold at the resinfo separators so no line exceeds RFC 5322's 78 characters
    needlessly (§2.1.1)."""
    return field_line.replace("; ", ";\r\n\t")


def _spam_headers(verdict: Verdict, mailbox_id: int, threshold: float, junk: bool) -> bytes:
    tests = list(verdict.tests)
    result = verdict.bayes.get(mailbox_id)
    if result is not None:
        tests.insert(0, f"BAYES_{min(99, int(result.probability * 100)):02d}")
        if result.starter:
            tests.insert(1, "BAYES_STARTER")  # the day-one model judged, not the site's own
    else:
        tests.insert(0, "BAYES_UNTRAINED")
    score = verdict.score(mailbox_id)
    status = (f"{'Yes' if junk else 'No'}, score={score:.1f} required={threshold:.1f} "
              f"tests={','.join(tests)}")
    fields = f"X-Spam-Score: {score:.1f}\r\nX-Spam-Status: {status}\r\n"
    if result is not None and result.clues:
        fields += f"X-Spam-Clues: {format_clues(result.clues[:CLUES_SHOWN])}\r\n"
    return fields.encode()


CLUES_SHOWN = 6


def format_clues(clues: Sequence[tuple[str, float]]) -> str:
    """The classifier's strongest clues as "token=f(w)" pairs; a token's
    spaces, commas and anything not printable ASCII percent-encoded, so the
    field stays one line of ASCII that ``parse_clues`` reads back."""
    return ", ".join(f"{quote(token, safe=_CLUE_SAFE)}={probability:.2f}"
                     for token, probability in clues)


_CLUE_SAFE = "!#$&'()*+/:;<>?@[]^_`{|}~-."


def parse_clues(value: str) -> list[tuple[str, float]]:
    """X-Spam-Clues back into (token, f(w)) pairs; what does not parse is left out."""
    clues = []
    for item in value.split(","):
        token, _, probability = item.strip().rpartition("=")
        try:
            clues.append((unquote(token), float(probability)))
        except ValueError:
            continue
    return [(token, f) for token, f in clues if token]


def _is_ours(name: str, value: bytes) -> bool:
    """Fields a sender must not be able to forge: our verdicts, and results
    claiming to come from us (RFC 8601 §5)."""
    if name in ("x-spam-score", "x-spam-status", "x-spam-flag", "x-spam-clues"):
        return True
    if name == "authentication-results":
        authserv_id = value.split(b";", 1)[0].split()[:1]
        return [a.decode("latin-1").lower() for a in authserv_id] == [
            settings.MAILHOST_HOSTNAME.lower()]
    return False


# --- filing -------------------------------------------------------------------------


# Set while a filing task is queued and not started yet: that task will take
# every row committed before it starts, so no other task is needed meanwhile.
# It expires, so that a task lost with its worker holds nothing up for long.
_TASK_QUEUED = "antispam:filing-task-queued"
_TASK_QUEUED_SECONDS = 5
# A batch stops taking on checks after this many seconds and is filed.
_BATCH_CHECK_SECONDS = 2.0


def schedule_checks(pks: list[int]) -> None:
    """Hand newly spooled messages to the workers (on the spool's commit).
    A burst is checked and filed in a few transactions, not one per message:
    no task is queued while one is waiting to start, and a task takes what
    else is waiting besides its own rows (``file_waiting``)."""
    from apps.antispam import tasks

    if pks and not settings.MAILHOST_ANTISPAM_INLINE and cache.add(
            _TASK_QUEUED, True, timeout=_TASK_QUEUED_SECONDS):
        tasks.check_and_file_many.delay(list(pks))


def file_waiting(pks: Sequence[int]) -> int:
    """Check and file ``pks`` and every other spooled message waiting, a
    batch per transaction, until none is left; returns how many were filed."""
    # Cleared before the first claim: a row committed after this queues a task
    # of its own, a row committed before it is in our claims.
    cache.delete(_TASK_QUEUED)
    filed = 0
    while batch := file_spooled_batch(pks, fill_to=settings.MAILHOST_SPOOL_BATCH):
        filed += len(batch)
        pks = []
    return filed


def _claim_batch(pks: Sequence[int], *, fill_to: int = 0,
                 waiting: Q | None = None) -> list[SpooledMessage]:
    """Take the rows of ``pks`` that no live claim holds, and then other such
    rows (oldest first, matching ``waiting``) until the batch holds
    ``fill_to``. A claim lasts MAILHOST_ANTISPAM_TIMEOUT: a dead worker's
    rows are taken again after that."""
    now = timezone.now()
    until = now + timedelta(seconds=settings.MAILHOST_ANTISPAM_TIMEOUT)
    free = SpooledMessage.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    with transaction.atomic():
        # PostgreSQL skips the rows another worker is claiming right now;
        # SQLite's BEGIN IMMEDIATE lets one claim run at a time.
        free = free.select_for_update(skip_locked=True).order_by("pk")
        ids = list(free.filter(pk__in=list(pks)).values_list("pk", flat=True)) if pks else []
        if len(ids) < fill_to:
            more = free.exclude(pk__in=ids).filter(waiting or Q())
            ids += more.values_list("pk", flat=True)[:fill_to - len(ids)]
        if not ids:
            return []
        SpooledMessage.objects.filter(pk__in=ids).update(claimed_until=until)
    return list(SpooledMessage.objects.filter(pk__in=ids).order_by("pk"))


def file_spooled(pk: int, *, checks: bool = True) -> bool:
    """Check and deliver one spooled message; False if it was not ours to do
    (already filed, or being checked by another worker)."""
    return file_spooled_batch([pk], checks=checks) == [pk]


def file_spooled_batch(pks: Sequence[int], *, checks: bool = True, fill_to: int = 0,
                       waiting: Q | None = None) -> list[int]:
    """Claim the spooled messages ``pks`` (and up to ``fill_to`` in all with
    others waiting, see ``_claim_batch``), check each, and file them all in one
    transaction that also deletes their spool rows: a worker killed at any
    point leaves each message either filed once or still spooled. Returns the
    primary keys filed here."""
    rows = _claim_batch(pks, fill_to=fill_to, waiting=waiting)
    if not rows:
        return []
    store_ = get_blob_store()
    # Read once for the batch; none when unchecked (or the checks are off).
    site = phishing.site_facts() if checks and settings.MAILHOST_ANTISPAM else None
    started = time.monotonic()
    examined: list[tuple[SpooledMessage, bytes, _Examined | None]] = []
    for index, row in enumerate(rows):
        if examined and time.monotonic() - started > _BATCH_CHECK_SECONDS:
            # Slow checks (DNS) must not hold back what is checked already:
            # file that now, and give the rest back for the next claim.
            SpooledMessage.objects.filter(
                pk__in=[r.pk for r in rows[index:]], claimed_until=row.claimed_until,
            ).update(claimed_until=None)
            break
        data = store_.read(row.blob_id)
        examined.append((row, data, _examined(row, data, site) if site is not None else None))
    verdicts = (_verdicts([e for _, _, e in examined], site=site) if site is not None
                else [None] * len(examined))
    return _deliver([(row, data, verdict) for (row, data, _), verdict
                     in zip(examined, verdicts, strict=True)])


def _examined(row: SpooledMessage, data: bytes, site: phishing.Site) -> _Examined | None:
    """The message examined, or None (filed unchecked) when the checks fail
    or take longer than MAILHOST_ANTISPAM_TIMEOUT."""
    started = time.monotonic()
    try:
        examined = _examine(row, data, site=site)
    except Exception:
        log.exception("checks failed spool=%s: delivering unfiled", row.pk)
        return None
    if time.monotonic() - started > settings.MAILHOST_ANTISPAM_TIMEOUT:
        log.warning("checks took too long spool=%s: delivering unfiled", row.pk)
        return None
    return examined


def spam_threshold(mailbox: Mailbox) -> float:
    """The score from which mail is filed into Junk: the mailbox's own, else
    its domain's, else the site default."""
    for own in (mailbox.spam_threshold, mailbox.domain.spam_threshold):
        if own is not None:
            return own
    return settings.MAILHOST_SPAM_THRESHOLD


@dataclass
class _Filing:
    """One spooled message's deliveries (one per folder, header block and
    flags) and what the recipients' Sieve scripts do once it is filed."""

    row: SpooledMessage
    data: bytes
    checked: bool
    requests: list[DeliveryRequest]
    sieve_plans: list[MailboxPlan] = field(default_factory=list)
    # The trace of a message that the recipients' scripts filed nowhere.
    unfiled_events: list[TraceEvent] = field(default_factory=list)


def _filing(row: SpooledMessage, data: bytes, verdict: Verdict | None,
            mailboxes: dict[int, Mailbox], junk_folders: dict[int, str]) -> _Filing:
    # mailbox -> (the folder the checks chose, payload, added header fields)
    chosen: dict[int, tuple[str, bytes, bytes]] = {}
    verdicts: list[dict[str, object]] = []
    present = [m for m in row.mailbox_ids if m in mailboxes]  # else deleted since
    at: int | None = None  # where the verdicts go into the spooled blob
    clean = strip_fields(data, _is_ours)
    if verdict is None:
        # Unchecked, yet a sender's own verdict fields go all the same: the
        # webmail's badges, banner and Junk explanation believe them.
        chosen = dict.fromkeys(present, ("INBOX", clean, b""))
    else:
        # The verdicts go below our Received field, beside the spooled blob,
        # which is filed as it is (apps/store/filed.py), unless it carries
        # forged verdicts to drop (or an odd first line): then a rewritten
        # copy is stored.
        at = mime.after_first_field(data) if clean is data else None
        for mailbox_id in present:
            mailbox = mailboxes[mailbox_id]
            threshold = spam_threshold(mailbox)
            junk = verdict.quarantine or verdict.score(mailbox_id) >= threshold
            headers = verdict.auth_header + _spam_headers(verdict, mailbox_id, threshold, junk)
            folder = junk_folders.get(mailbox_id, "Junk") if junk else "INBOX"
            if at is not None:
                chosen[mailbox_id] = (folder, data, headers)
            else:
                chosen[mailbox_id] = (folder, insert_after_first_field(clean, headers), b"")
            verdicts.append(_mailbox_verdict(verdict, mailbox, threshold, junk))
    # (folder, payload, added header fields) -> mailboxes
    groups: dict[tuple[str, bytes, bytes], list[int]] = defaultdict(list)
    for mailbox_id, (folder, payload, added) in chosen.items():
        groups[folder, payload, added].append(mailbox_id)
    requests = [DeliveryRequest(ids, payload, folder=folder, check_quota=False,
                                queue_id=row.queue_id, added_headers=added, added_at=at or 0,
                                accepted_at=row.received,
                                stored_as=row.blob_id if payload is data else "",
                                analysis=verdict.analysis if verdict and payload is data
                                else None,
                                index_later=True)
                for (folder, payload, added), ids in groups.items() if ids]
    if requests and row.queue_id:
        requests[0].trace_events.append(trace.event(
            TraceKind.VERDICT, row.queue_id,
            addresses=[row.mail_from, *(mailboxes[m].address for m in present)],
            checked=verdict is not None, tests=verdict.tests if verdict else [],
            mailboxes=verdicts, **(verdict.results if verdict else {})))
    return _Filing(row, data, verdict is not None, requests)


def _route(filings: Sequence[_Filing]) -> None:
    """The recipients' Sieve scripts decide where what is not Junk goes,
    seeing the verdict fields, as on every delivery path
    (apps/delivery/filing.py); Junk is never redirected nor answered."""
    flat = [(filing, request) for filing in filings for request in filing.requests]
    routed = route([request for _, request in flat],
                   senders=[filing.row.mail_from for filing, _ in flat],
                   parameters=[MailParameters(filing.row.require_tls, filing.row.binarymime)
                               for filing, _ in flat])
    for filing in filings:
        filing.requests = []
    for request, owner in zip(routed.requests, routed.owners, strict=True):
        flat[owner][0].requests.append(request)
    for owner, plan in routed.plans:
        flat[owner][0].sieve_plans.append(plan)
    for owner, event in routed.unfiled_events:
        flat[owner][0].unfiled_events.append(event)


def _deliver(checked: Sequence[tuple[SpooledMessage, bytes, Verdict | None]]) -> list[int]:
    """File checked messages in one transaction (one round of fsyncs), each
    only if its spool row is still there, deleting the rows filed."""
    all_ids = {m for row, _, _ in checked for m in row.mailbox_ids}
    mailboxes = Mailbox.objects.select_related("domain").in_bulk(list(all_ids))
    # RFC 6154: the folder marked \Junk, whatever the user renamed it to; a
    # DMARC reject or quarantine never falls back to INBOX for want of one.
    quarantined = {m for row, _, v in checked if v and v.quarantine for m in row.mailbox_ids}
    junk_folders = store.junk_folders(all_ids, recreate=quarantined & set(mailboxes)) if any(
        v for _, _, v in checked) else {}
    filings = [_filing(row, data, verdict, mailboxes, junk_folders)
               for row, data, verdict in checked]
    _route(filings)
    # Parsed (and written, for a rewritten copy) before the write transaction.
    store.prepare_deliveries([r for f in filings for r in f.requests])
    with transaction.atomic():
        # The sweeper or another worker may have filed some meanwhile (after
        # our claim expired): those rows are gone, and their messages stay out.
        locked = set(SpooledMessage.objects.select_for_update().filter(
            pk__in=[f.row.pk for f in filings]).values_list("pk", flat=True))
        filings = [f for f in filings if f.row.pk in locked]
        for error in store.deliver_batch([r for f in filings for r in f.requests]):
            if error is not None:
                raise error
        trace.record([event for f in filings for event in f.unfiled_events])
        # In this transaction: a message redirected and not kept is never lost.
        queue_redirects([plan for f in filings for plan in f.sieve_plans])
        SpooledMessage.objects.filter(pk__in=locked).delete()
    for filing in filings:
        for request in filing.requests:
            log.info("filed spool=%s folder=%s mailboxes=%s checked=%s", filing.row.pk,
                     request.folder, list(request.mailbox_ids), filing.checked)
    send_replies([plan for f in filings for plan in f.sieve_plans])
    return [f.row.pk for f in filings]


def _mailbox_verdict(verdict: Verdict, mailbox: Mailbox, threshold: float,
                     junk: bool) -> dict[str, object]:
    """One mailbox's score and the classifier's strongest clues, for the trace."""
    result = verdict.bayes.get(mailbox.pk)
    clues = [[token, round(probability, 2)] for token, probability in
             (result.clues[:5] if result else [])]
    return {"mailbox": mailbox.address, "score": verdict.score(mailbox.pk),
            "threshold": threshold, "junk": junk, "clues": clues}


def file_overdue(pks: list[int]) -> list[int]:
    """File unchecked, in one transaction, those of ``pks`` still waiting for
    their checks; returns the ones a worker holds meanwhile."""
    waiting = set(SpooledMessage.objects.filter(pk__in=pks).values_list("pk", flat=True))
    filed = set(file_spooled_batch(sorted(waiting), checks=False)) if waiting else set()
    return sorted(waiting - filed)


def sweep_spool() -> int:
    """Deliver, unfiled, what has waited longer than the checks may take, a
    batch per transaction."""
    overdue = Q(received__lt=timezone.now()
                - timedelta(seconds=settings.MAILHOST_ANTISPAM_TIMEOUT))
    delivered = 0
    while batch := file_spooled_batch([], checks=False, fill_to=settings.MAILHOST_SPOOL_BATCH,
                                      waiting=overdue):
        delivered += len(batch)
    return delivered
