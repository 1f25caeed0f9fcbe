"""Certificates over ACME (RFC 8555): which names, whether the served
certificate is due, and issuance. The management command ``certificate`` and
the beat task ``apps.certificates.tasks.renew`` both call ``renew``/``issue``.

The account key lives in ``<data dir>/acme/`` (owner-only); the certificate
and its key are kept in the database for every node and written over the
listeners' pair (storage.configured_paths), which the listeners pick up at
their next handshake; other nodes' listeners install it from the database."""

from __future__ import annotations

import datetime
import logging
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import josepy
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

from apps.certificates import challenges, storage
from apps.directory.models import Domain
from apps.store import leases
from mailhost.errors import MailhostError

log = logging.getLogger(__name__)

# RFC 8555 §7.1.6: an order waits on its authorizations, then on finalization.
ORDER_TIMEOUT = datetime.timedelta(seconds=90)
_RENEWAL_LEASE = "certificates:renewal-lease"


class CertificateError(MailhostError):
    """The certificate could not be issued."""

    code = "certificate_error"
    user_fault = False


def enabled() -> bool:
    return bool(settings.MAILHOST_ACME_DIRECTORY)


def wanted_names() -> list[str]:
    """MAILHOST_HOSTNAME, then each MAILHOST_ACME_NAMES entry; an entry with
    ``{domain}`` (``mta-sts.{domain}``) stands for one name per active hosted
    domain."""
    names = [settings.MAILHOST_HOSTNAME.lower().rstrip(".")]
    domains: list[str] | None = None
    for entry in settings.MAILHOST_ACME_NAMES:
        if "{domain}" in entry:
            if domains is None:
                domains = list(Domain.objects.filter(active=True).values_list("name", flat=True))
            candidates = [entry.replace("{domain}", domain) for domain in domains]
        else:
            candidates = [entry]
        names += [name.lower().rstrip(".") for name in candidates]
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Status:
    enabled: bool
    names: list[str]
    installed: storage.Installed | None
    due: bool
    reason: str


def status(*, now: datetime.datetime | None = None) -> Status:
    """Whether the served certificate needs (re)issuing, and why."""
    now = now or datetime.datetime.now(datetime.UTC)
    names = wanted_names()
    current = storage.installed()
    if not enabled():
        reason = "ACME is off (MAILHOST_ACME_DIRECTORY is empty)"
    elif current is None:
        reason = "no certificate yet"
    elif current.self_signed:
        reason = "the certificate is self-signed"
    elif missing := sorted(set(names) - current.names):
        reason = "not valid for " + ", ".join(missing)
    elif current.days_left(now) < settings.MAILHOST_ACME_RENEW_DAYS:
        reason = f"expires in {current.days_left(now):.0f} days"
    else:
        return Status(True, names, current, False,
                      f"valid for {current.days_left(now):.0f} more days")
    return Status(enabled(), names, current, enabled(), reason)


def _account_key() -> josepy.JWKEC:
    """Our ACME account is this key (RFC 8555 §7.3): made once, kept private."""
    path = settings.DATA_DIR / "acme" / "account-key.pem"
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        storage.write_private(path, storage.private_key_pem(key))
    return josepy.JWKEC(key=serialization.load_pem_private_key(path.read_bytes(),
                                                               password=None))


def _client() -> acme_client.ClientV2:
    # A private CA (pebble, step-ca) is trusted through MAILHOST_ACME_CA_BUNDLE;
    # requests takes a bundle's path where acme's type says bool.
    verify: bool | str = settings.MAILHOST_ACME_CA_BUNDLE or True
    net = acme_client.ClientNetwork(_account_key(), alg=josepy.ES256, verify_ssl=verify,  # type: ignore[arg-type]
                                    user_agent="mailhost")
    client = acme_client.ClientV2(acme_client.ClientV2.get_directory(
        settings.MAILHOST_ACME_DIRECTORY, net), net)
    contact = (f"mailto:{settings.MAILHOST_ACME_EMAIL}",) if settings.MAILHOST_ACME_EMAIL else ()
    try:
        client.new_account(messages.NewRegistration(contact=contact,
                                                    terms_of_service_agreed=True))
    except errors.ConflictError as existing:
        # RFC 8555 §7.3.1: the key has an account already; use it (by its URL).
        net.account = messages.RegistrationResource(uri=existing.location,
                                                    body=messages.Registration())
    return client


def _run_hook(*args: str) -> None:
    command = [*shlex.split(settings.MAILHOST_ACME_DNS_HOOK), *args]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise CertificateError(f"the DNS hook failed ({' '.join(args[:2])}): "
                               f"{error} {detail.decode(errors='replace').strip()}") from error


@contextmanager
def _answers(client: acme_client.ClientV2,
             order: messages.OrderResource) -> Iterator[list[messages.ChallengeBody]]:
    """Publish an answer for every pending authorization, http-01 from the web
    process, or dns-01 through MAILHOST_ACME_DNS_HOOK when one is set; take
    them all down afterwards, whatever happened."""
    wanted = acme_challenges.DNS01 if settings.MAILHOST_ACME_DNS_HOOK else acme_challenges.HTTP01
    account_key = client.net.key
    chosen: list[tuple[messages.ChallengeBody, str, str]] = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            name = authorization.body.identifier.value
            challenge = next((c for c in authorization.body.challenges
                              if isinstance(c.chall, wanted)), None)
            if challenge is None:
                raise CertificateError(f"the CA offers no {wanted.typ} challenge for {name}")
            validation = challenge.chall.validation(account_key)
            if wanted is acme_challenges.DNS01:
                # RFC 8555 §8.4: a TXT record at _acme-challenge.<name>.
                record = challenge.chall.validation_domain_name(name)
                _run_hook("set", record, validation)
                chosen.append((challenge, record, validation))
            else:
                token = challenge.chall.encode("token")
                challenges.publish(token, validation)
                chosen.append((challenge, token, validation))
        yield [challenge for challenge, _, _ in chosen]
    finally:
        for _challenge, where, validation in chosen:
            if wanted is acme_challenges.DNS01:
                try:
                    _run_hook("clear", where, validation)
                except CertificateError:
                    log.exception("could not clear %s", where)
            else:
                challenges.withdraw(where)


def issue() -> Path:
    """Order a certificate for ``wanted_names()``, answer its challenges and
    install it with a new key; returns the certificate's path."""
    if not enabled():
        raise CertificateError("ACME is off: set MAILHOST_ACME_DIRECTORY")
    names = wanted_names()
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = storage.private_key_pem(key)
    try:
        client = _client()
        order = client.new_order(crypto_util.make_csr(key_pem, names))
        with _answers(client, order) as pending:
            for challenge in pending:
                client.answer_challenge(challenge, challenge.response(client.net.key))
            deadline = datetime.datetime.now() + ORDER_TIMEOUT  # noqa: DTZ005 (acme compares naive)
            finished = client.poll_and_finalize(order, deadline)
    except (errors.Error, messages.Error, OSError) as error:
        raise CertificateError(f"ACME order for {', '.join(names)} failed: {error}") from error
    storage.keep_issued(chain_pem=finished.fullchain_pem.encode(), key_pem=key_pem)
    cert_path, _ = storage.configured_paths()
    log.info("installed a certificate for %s in %s", ", ".join(names), cert_path)
    return cert_path


def renew(*, force: bool = False) -> bool:
    """Issue when the served certificate is due (or ``force``); True if a new
    one was installed. One node at a time: beat may run on every node."""
    # What another node renewed counts: this node's files may be behind.
    storage.install_newer()
    if not enabled() or not (force or status().due):
        return False
    # Beat's run holds the task's lease too; this one also keeps out a
    # ``manage.py certificate renew`` started meanwhile.
    with leases.held(_RENEWAL_LEASE) as ours:
        if not ours:
            log.info("certificate renewal is running elsewhere")
            return False
        issue()
    return True
