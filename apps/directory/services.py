"""Directory services: provisioning, address resolution and authentication.

Every front end (management commands, admin, API, protocol sessions) calls these;
none of them re-implements a rule that lives here.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import ipaddress
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Model
from django.utils import timezone

from apps.directory import app_passwords
from apps.directory.addresses import (
    normalize_address,
    normalize_domain,
    split_address,
    strip_subaddress,
)
from apps.directory.audit import SECRET_CHANGED, Actor, record
from apps.directory.models import Alias, DkimKey, Domain, Mailbox, Role, User
from mailhost import counters, metrics
from mailhost.asyncdb import database_sync_to_async
from mailhost.compiled import CompiledQuery
from mailhost.errors import (
    Conflict,
    Disabled,
    Invalid,
    LimitExceeded,
    MailhostError,
    NotFound,
)

log = logging.getLogger(__name__)

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"


# --- provisioning -----------------------------------------------------------------

MAX_FORWARDS = 50


@contextmanager
def _about(field_name: str) -> Iterator[None]:
    """Name the input field that an Invalid raised inside was about (the API
    answers with field-level errors), unless it already names one."""
    try:
        yield
    except Invalid as error:
        error.context.setdefault("field", field_name)
        raise


def _check_limits(**limits: int | None) -> None:
    for name, value in limits.items():
        if value is not None and value < 0:
            raise Invalid(f"{name.replace('_', ' ')} must not be negative", field=name)


def _check_spam_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0 < threshold <= 1000:
        raise Invalid("spam threshold must be above 0 and at most 1000", field="spam_threshold")


def create_domain(
    name: str, *, default_quota: int | None = None, max_mailboxes: int = 0, active: bool = True,
    greylisting: bool = False, spam_threshold: float | None = None, actor: Actor | None = None,
) -> Domain:
    with _about("name"):
        ascii_name = normalize_domain(name)
    _check_limits(default_quota=default_quota, max_mailboxes=max_mailboxes)
    _check_spam_threshold(spam_threshold)
    with transaction.atomic():
        if Domain.objects.filter(name=ascii_name).exists():
            raise Conflict(f"domain {ascii_name} exists already", field="name")
        domain = Domain.objects.create(
            name=ascii_name,
            default_quota=(
                settings.MAILHOST_DEFAULT_QUOTA if default_quota is None else default_quota
            ),
            max_mailboxes=max_mailboxes,
            active=active,
            greylisting=greylisting,
            spam_threshold=spam_threshold,
        )
        create_dkim_key(domain, RSA_SHA256)
        create_dkim_key(domain, ED25519_SHA256)  # RFC 8463 §3: a second signature
        record(actor, "create", "domain", domain.name, domain_name=domain.name, changes={
            "default_quota": [None, domain.default_quota],
            "max_mailboxes": [None, max_mailboxes], "active": [None, active]})
        return domain


def create_dkim_key(domain: Domain, algorithm: str = RSA_SHA256, *,
                    signing: bool = True) -> DkimKey:
    """A new DKIM key with a date-based selector, so that a rotated key gets a
    name of its own: RSA-2048 (RFC 8301 §3.2) or Ed25519 (RFC 8463). A new
    domain's keys sign at once (there is nothing else to sign with); a rotated
    key is made with ``signing=False`` and signs once its record is seen."""
    from apps.directory import dkim_keys  # cryptography: not in every process

    if algorithm == RSA_SHA256:
        secret, public = dkim_keys.rsa_pair()
        selector = f"mh{timezone.now():%Y%m}"
    elif algorithm == ED25519_SHA256:
        secret, public = dkim_keys.ed25519_pair()
        selector = f"mh{timezone.now():%Y%m}e"
    else:
        raise Invalid(f"unknown DKIM algorithm {algorithm}", field="algorithm")
    taken = set(domain.dkim_keys.values_list("selector", flat=True))
    base, suffix = selector, 1
    while selector in taken:
        suffix += 1
        selector = f"{base}x{suffix}"
    return DkimKey.objects.create(
        domain=domain, selector=selector, algorithm=algorithm, private_key=secret,
        public_key=base64.b64encode(public).decode("ascii"),
        signing_since=timezone.now() if signing else None)


def signing_keys(domain_name: str) -> list[DkimKey]:
    """The signing DKIM key of each algorithm of a hosted, active domain: the
    newest that signs, not one still waiting to be seen in DNS, nor one retired."""
    newest: dict[str, DkimKey] = {}
    for key in (DkimKey.objects.select_related("domain")
                .filter(domain__name=domain_name, domain__active=True, active=True,
                        signing_since__isnull=False, retired__isnull=True)
                .order_by("-signing_since", "-pk")):
        newest.setdefault(key.algorithm, key)
    return list(newest.values())


def _validate_password(password: str, user: User | None = None) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as error:
        raise Invalid(" ".join(error.messages), field="password") from None


def _hosted_domain(domain_name: str) -> Domain:
    try:
        domain = Domain.objects.get(name=domain_name)
    except Domain.DoesNotExist:
        raise Invalid(f"domain {domain_name} is not hosted here", field="address") from None
    if not domain.active:
        raise Invalid(f"domain {domain_name} is disabled", field="address")
    return domain


def _address_taken(address: str) -> bool:
    return (
        Mailbox.objects.filter(address=address).exists()
        or Alias.objects.filter(address=address).exists()
        or User.objects.filter(email=address).exists()
    )


def create_mailbox(
    address: str, password: str, *, quota: int | None = None, display_name: str = "",
    actor: Actor | None = None,
) -> Mailbox:
    with _about("address"):
        local, domain_name = split_address(address)
    address = f"{local}@{domain_name}"
    with transaction.atomic():
        domain = _hosted_domain(domain_name)
        if _address_taken(address):
            raise Conflict(f"{address} exists already", field="address")
        if domain.max_mailboxes and domain.mailboxes.count() >= domain.max_mailboxes:
            raise LimitExceeded(
                f"domain {domain.name} has reached its limit of {domain.max_mailboxes} mailboxes",
                field="address",
            )
        _check_limits(quota=quota)
        user = User(email=address, display_name=display_name, role=Role.MAILBOX_USER)
        _validate_password(password, user)
        user.set_password(password)
        user.save()
        mailbox = Mailbox.objects.create(
            domain=domain,
            local_part=local,
            address=address,
            user=user,
            quota=domain.default_quota if quota is None else quota,
        )
        changes: dict[str, object] = {"quota": [None, mailbox.quota], "password": SECRET_CHANGED}
        if display_name:
            changes["display_name"] = [None, display_name]
        record(actor, "create", "mailbox", address, domain_name=domain.name, changes=changes)
        return mailbox


def set_password(user: User, password: str, *, actor: Actor | None = None) -> None:
    update_account(user, password=password, actor=actor)


def _account_changes(
    user: User, *, display_name: str | None, password: str | None
) -> dict[str, object]:
    if display_name is not None:
        display_name = display_name.strip()
        if len(display_name) > User._meta.get_field("display_name").max_length:  # type: ignore[operator]
            raise Invalid("display name too long", field="display_name")
    hashed = None
    if password is not None:
        _validate_password(password, user)
        hashed = make_password(password)
    changes = _save_changes(user, display_name=display_name, password=hashed)
    if "password" in changes:
        changes["password"] = SECRET_CHANGED  # never the hashes
    return changes


def update_account(
    user: User, *, display_name: str | None = None, password: str | None = None,
    actor: Actor | None = None,
) -> User:
    """Change an account's display name and password; None leaves it as it is.
    A new password takes effect for every protocol at once (authenticate()
    keys its cache on the stored hash)."""
    with transaction.atomic():
        changes = _account_changes(user, display_name=display_name, password=password)
        if changes:
            # An administrator's address says nothing about the domains they
            # manage: their entries are not any domain's (superadmins see them).
            mailbox = user.role == Role.MAILBOX_USER
            record(actor, "password" if set(changes) == {"password"} else "update",
                   "mailbox" if mailbox else "administrator", user.email,
                   domain_name=user.email.rpartition("@")[2] if mailbox else "",
                   changes=changes)
    return user


def _split_alias_address(address: str) -> tuple[str, str]:
    address = address.strip()
    if address.startswith("@"):
        return "", normalize_domain(address[1:])
    return split_address(address)


def _alias_targets(destinations: Iterable[str]) -> list[str]:
    with _about("destinations"):
        targets = [normalize_address(d) for d in destinations]
    if not targets:
        raise Invalid("an alias needs at least one destination", field="destinations")
    return list(dict.fromkeys(targets))


def create_alias(
    address: str, destinations: Iterable[str], *, actor: Actor | None = None
) -> Alias:
    with _about("address"):
        local, domain_name = _split_alias_address(address)
    address = f"{local}@{domain_name}"
    targets = _alias_targets(destinations)
    with transaction.atomic():
        domain = _hosted_domain(domain_name)
        if _address_taken(address):
            raise Conflict(f"{address} exists already", field="address")
        alias = Alias.objects.create(
            domain=domain, local_part=local, address=address, destinations=targets,
        )
        record(actor, "create", "alias", address, domain_name=domain.name,
               changes={"destinations": [None, targets]})
        return alias


class _Keep:
    """The default of a setting that None would clear: leave it as it is."""


KEEP = _Keep()


def _save_changes(instance: Model, **values: object) -> dict[str, object]:
    """Set the fields given a value other than None (or KEEP), and save only
    those that really change; the changes, as ``{field: [old, new]}``."""
    changes: dict[str, object] = {}
    for name, value in values.items():
        old = getattr(instance, name)
        if value is None or value is KEEP or value == old:
            continue
        setattr(instance, name, value)
        changes[name] = [old, value]
    if changes:
        instance.save(update_fields=list(changes))
    return changes


def update_domain(
    domain: Domain, *, active: bool | None = None, default_quota: int | None = None,
    max_mailboxes: int | None = None, greylisting: bool | None = None,
    spam_threshold: float | _Keep | None = KEEP, app_passwords_required: bool | None = None,
    second_factor_required: bool | None = None, actor: Actor | None = None,
) -> Domain:
    """Change a domain's settings; None leaves a setting as it is (but clears
    ``spam_threshold``, back to the site default). A disabled domain refuses
    its mail (550 5.2.1) and its logins at once."""
    _check_limits(default_quota=default_quota, max_mailboxes=max_mailboxes)
    with transaction.atomic():
        changes = _save_changes(domain, active=active, default_quota=default_quota,
                                max_mailboxes=max_mailboxes, greylisting=greylisting,
                                app_passwords_required=app_passwords_required,
                                second_factor_required=second_factor_required)
        if spam_threshold is not KEEP and spam_threshold != domain.spam_threshold:
            _check_spam_threshold(spam_threshold)  # type: ignore[arg-type]
            changes["spam_threshold"] = [domain.spam_threshold, spam_threshold]
            domain.spam_threshold = spam_threshold  # type: ignore[assignment]
            domain.save(update_fields=["spam_threshold"])
        if changes:
            record(actor, "update", "domain", domain.name, domain_name=domain.name,
                   changes=changes)
    return domain


def delete_domain(
    domain: Domain, *, with_mailboxes: bool = False, actor: Actor | None = None
) -> None:
    """Remove a domain with its aliases and DKIM keys. One that still has
    mailboxes is refused, so that no mail store disappears as a side effect,
    unless ``with_mailboxes`` says to remove them (and their mail) too."""
    with transaction.atomic():
        count = domain.mailboxes.count()
        if count and not with_mailboxes:
            raise Conflict(f"domain {domain.name} still has {count} mailboxes", field="name")
        # The mailboxes go with their accounts (Mailbox.user cascades).
        User.objects.filter(mailbox__domain=domain).delete()
        record(actor, "delete", "domain", domain.name, domain_name=domain.name,
               changes={"mailboxes removed": count} if count else None)
        domain.delete()


def forward_targets(mailbox: Mailbox, destinations: Iterable[str]) -> list[str]:
    """The forwarding addresses, normalized, once each; Invalid (for the
    field "forward_to") for a bad one, the mailbox itself or too many."""
    with _about("forward_to"):
        targets = list(dict.fromkeys(normalize_address(d) for d in destinations))
    if mailbox.address in targets:
        raise Invalid("a mailbox cannot forward to itself", field="forward_to")
    if len(targets) > MAX_FORWARDS:
        raise Invalid(f"at most {MAX_FORWARDS} forwarding addresses", field="forward_to")
    return targets


def update_mailbox(
    mailbox: Mailbox, *, quota: int | None = None, active: bool | None = None,
    display_name: str | None = None, password: str | None = None,
    forward_to: Iterable[str] | None = None, forward_keep_copy: bool | None = None,
    spam_threshold: float | _Keep | None = KEEP, password_web_only: bool | None = None,
    actor: Actor | None = None,
) -> Mailbox:
    """Change a mailbox and its account; None leaves a setting as it is. A
    disabled mailbox refuses its mail (550 5.2.1) and its logins at once; an
    empty ``forward_to`` turns forwarding off."""
    _check_limits(quota=quota)
    forwards = None if forward_to is None else forward_targets(mailbox, forward_to)
    if spam_threshold is not KEEP:
        _check_spam_threshold(spam_threshold)  # type: ignore[arg-type]
    with transaction.atomic():
        changes = _account_changes(mailbox.user, display_name=display_name, password=password)
        changes |= _save_changes(mailbox, quota=quota, active=active, forward_to=forwards,
                                 forward_keep_copy=forward_keep_copy,
                                 password_web_only=password_web_only)
        if spam_threshold is not KEEP and spam_threshold != mailbox.spam_threshold:
            changes["spam_threshold"] = [mailbox.spam_threshold, spam_threshold]
            mailbox.spam_threshold = spam_threshold  # type: ignore[assignment]
            mailbox.save(update_fields=["spam_threshold"])
        if changes:
            record(actor, "password" if set(changes) == {"password"} else "update", "mailbox",
                   mailbox.address, domain_name=mailbox.domain.name, changes=changes)
    return mailbox


def change_own_password(
    mailbox: Mailbox, *, old: str, new: str, remote_ip: str | None, protocol: str,
) -> None:
    """A user changing their own password: the old one is checked as a login
    is (a wrong one counts towards the lockout, a locked-out login fails)."""
    if authenticate(mailbox.address, old, remote_ip=remote_ip, protocol=protocol) is None:
        raise Invalid("The current password is not right, or changes are paused for a while.",
                      field="old_password")
    update_account(mailbox.user, password=new, actor=Actor(mailbox.user, remote_ip))


def delete_mailbox(mailbox: Mailbox, *, actor: Actor | None = None) -> None:
    """Remove a mailbox with its account, folders and messages (the blobs are
    collected later by the store's housekeeping)."""
    with transaction.atomic():
        record(actor, "delete", "mailbox", mailbox.address, domain_name=mailbox.domain.name)
        mailbox.user.delete()


def update_alias(
    alias: Alias, *, destinations: Iterable[str] | None = None, active: bool | None = None,
    actor: Actor | None = None,
) -> Alias:
    targets = None if destinations is None else _alias_targets(destinations)
    with transaction.atomic():
        changes = _save_changes(alias, destinations=targets, active=active)
        if changes:
            record(actor, "update", "alias", alias.address, domain_name=alias.domain.name,
                   changes=changes)
    return alias


def delete_alias(alias: Alias, *, actor: Actor | None = None) -> None:
    with transaction.atomic():
        record(actor, "delete", "alias", alias.address, domain_name=alias.domain.name)
        alias.delete()


# --- resolution -------------------------------------------------------------------


@dataclass
class Resolution:
    """Where mail for one address goes."""

    address: str
    hosted: bool
    mailboxes: list[Mailbox] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def _lookup(local: str, domain: str) -> tuple[Mailbox | None, Alias | None]:
    address = f"{local}@{domain}"
    mailbox = Mailbox.objects.select_related("domain").filter(address=address).first()
    if mailbox is not None:
        return mailbox, None
    return None, Alias.objects.filter(address=address, active=True).first()


# --- the resolution cache: resolve runs on every RCPT ---
# Each process keeps the outcomes of ``resolve`` with the directory version they
# were resolved under. Every write to a domain, mailbox or alias sets a new
# version in the shared cache (Redis, or the file cache: every process of the
# instance sees it), so a disabled mailbox is refused at the next RCPT in every
# process; the TTL bounds what a write that bypassed the ORM could leave stale.
_VERSION_KEY = "directory:version"
_MAX_CACHED = 10_000
_resolved: dict[str, tuple[str, float, Resolution | MailhostError]] = {}


def directory_version() -> str:
    """The directory's current version (a fresh one if the cache lost it)."""
    version = cache.get(_VERSION_KEY)
    if version is None:
        cache.add(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
        version = cache.get(_VERSION_KEY)
    return version


def directory_changed(**_: object) -> None:
    """A domain, mailbox or alias changed: no process may answer from what it
    resolved before. Bumped at once and again on commit, so that a lookup that
    read the old rows while the write was in flight is not kept either."""
    cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
    transaction.on_commit(
        lambda: cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None))


def resolve(address: str, *, version: str | None = None) -> Resolution:
    """``resolve_uncached``, answered from this process's cache while the
    directory has not changed (and for MAILHOST_DIRECTORY_CACHE_SECONDS at most).
    ``version``: the ``directory_version()`` a caller resolving several
    addresses at once has just read for all of them."""
    ttl = settings.MAILHOST_DIRECTORY_CACHE_SECONDS
    if ttl <= 0:
        return resolve_uncached(address)
    local, domain_name = split_address(address)  # Invalid is not worth caching
    key = f"{local}@{domain_name}"
    if version is None:
        version = directory_version()  # read before the rows: see directory_changed
    now = time.monotonic()
    hit = _resolved.get(key)
    if hit is None or hit[0] != version or hit[1] < now:
        try:
            outcome: Resolution | MailhostError = resolve_uncached(key)
        except (NotFound, Disabled) as error:
            outcome = error
        if len(_resolved) >= _MAX_CACHED:
            _resolved.clear()
        hit = _resolved[key] = (version, now + ttl, outcome)
    outcome = hit[2]
    if isinstance(outcome, MailhostError):
        raise copy.copy(outcome)
    # A copy: callers may extend the lists; the mailboxes are only read.
    return Resolution(outcome.address, outcome.hosted, list(outcome.mailboxes),
                      list(outcome.external))


def resolve_uncached(address: str) -> Resolution:
    """Resolve a recipient address to local mailboxes and external addresses.

    Order for ``user+tag@domain``: a mailbox or alias with that exact name, then
    the same for ``user@domain``, then the domain's catch-all. Aliases expand
    recursively up to MAILHOST_ALIAS_MAX_DEPTH; an address seen twice on one
    path is a loop and contributes nothing. Raises NotFound for an unknown
    hosted address and Disabled for a disabled mailbox or domain.
    """
    local, domain_name = split_address(address)
    normalized = f"{local}@{domain_name}"
    # The common case, a plain mailbox that does not forward, in one query.
    direct = Mailbox.objects.select_related("domain").filter(address=normalized).first()
    if direct is not None and not direct.forward_to:
        if not direct.domain.active:
            raise Disabled(f"domain {domain_name} is disabled")
        if not direct.active:
            raise Disabled(f"mailbox {direct.address} is disabled")
        return Resolution(address=normalized, hosted=True, mailboxes=[direct])
    domain = Domain.objects.filter(name=domain_name).first()
    if domain is None:
        return Resolution(address=normalized, hosted=False, external=[normalized])
    if not domain.active:
        raise Disabled(f"domain {domain_name} is disabled")

    result = Resolution(address=normalized, hosted=True)
    seen_mailboxes: set[int] = set()
    delimiter = settings.MAILHOST_SUBADDRESS_DELIMITER
    max_depth = settings.MAILHOST_ALIAS_MAX_DEPTH
    hosted: dict[str, bool] = {domain_name: True}

    def expand(local: str, domain_name: str, path: frozenset[str], depth: int) -> bool:
        """Add the targets of one address; False when nothing answers for it."""
        target = f"{local}@{domain_name}"
        if target in path or depth > max_depth:
            log.warning("alias loop or depth limit at %s (path %s)", target, sorted(path))
            return True  # known, but delivers nothing further
        path = path | {target}
        if domain_name not in hosted:
            hosted[domain_name] = Domain.objects.filter(name=domain_name).exists()
        if not hosted[domain_name]:
            if target not in result.external:
                result.external.append(target)
            return True
        candidates = [local]
        base = strip_subaddress(local, delimiter)
        if base:
            candidates.append(base)
        for candidate in candidates:
            mailbox, alias = _lookup(candidate, domain_name)
            if mailbox is not None:
                if not mailbox.active:
                    raise Disabled(f"mailbox {mailbox.address} is disabled")
                for destination in mailbox.forward_to:
                    d_local, d_domain = split_address(destination)
                    expand(d_local, d_domain, path, depth + 1)
                keep = mailbox.forward_keep_copy or not mailbox.forward_to
                if keep and mailbox.pk not in seen_mailboxes:
                    seen_mailboxes.add(mailbox.pk)
                    result.mailboxes.append(mailbox)
                return True
            if alias is not None:
                for destination in alias.destinations:
                    d_local, d_domain = split_address(destination)
                    expand(d_local, d_domain, path, depth + 1)
                return True
        catch_all = Alias.objects.filter(address=f"@{domain_name}", active=True).first()
        if catch_all is not None and f"@{domain_name}" not in path:
            for destination in catch_all.destinations:
                d_local, d_domain = split_address(destination)
                expand(d_local, d_domain, path | {f"@{domain_name}"}, depth + 1)
            return True
        return False

    if not expand(local, domain_name, frozenset(), 0):
        raise NotFound(f"no mailbox here by the name {normalized}")
    if not result.mailboxes and not result.external:
        raise NotFound(f"{normalized} resolves to nothing (alias loop)")
    return result


def may_send_as(mailbox: Mailbox, address: str) -> bool:
    """Whether a signed-in mailbox may use ``address`` as its sender: its own
    address (with or without a sub-address tag), an alias that points to it,
    or any address of a domain its user administers."""
    try:
        local, domain_name = split_address(address)
    except Invalid:
        return False
    own = mailbox.address
    base = strip_subaddress(local, settings.MAILHOST_SUBADDRESS_DELIMITER)
    candidates = {f"{local}@{domain_name}"} | ({f"{base}@{domain_name}"} if base else set())
    if own in candidates:
        return True
    user = mailbox.user
    if user.administered_domains.filter(name=domain_name).exists():
        return True
    if user.role == Role.SUPERADMIN and Domain.objects.filter(name=domain_name).exists():
        return True
    return any(own in alias.destinations
               for alias in Alias.objects.filter(address__in=candidates, active=True))


def own_addresses(mailbox: Mailbox) -> list[str]:
    """The addresses that are a mailbox's own: its address, then the active
    aliases that deliver to it (not catch-alls), each of which ``may_send_as``
    allows. The webmail offers them as From; vacation replies recognise them."""
    aliases = Alias.objects.filter(active=True).exclude(local_part="").only(
        "address", "destinations")
    return [mailbox.address, *sorted(a.address for a in aliases.iterator()
                                     if mailbox.address in a.destinations)]


# --- authentication ---------------------------------------------------------------


def plaintext_auth_allowed(*, tls: bool, remote_ip: str | None) -> bool:
    """May a password be sent on this connection? Only inside TLS (RFC 8314 §5.1,
    RFC 3501 §6.2.3, RFC 2595 §2.3), except from the host itself when
    MAILHOST_PLAINTEXT_AUTH_LOOPBACK allows it (local tools and tests)."""
    if tls:
        return True
    if not settings.MAILHOST_PLAINTEXT_AUTH_LOOPBACK or not remote_ip:
        return False
    try:
        return ipaddress.ip_address(remote_ip).is_loopback
    except ValueError:
        return False


def _failure_keys(login: str, remote_ip: str | None) -> list[tuple[str, int]]:
    keys = [
        (f"authfail:login:{hashlib.sha256(login.encode()).hexdigest()}",
         settings.MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN),
    ]
    if remote_ip:
        keys.append((f"authfail:ip:{remote_ip}", settings.MAILHOST_AUTH_MAX_FAILURES_PER_IP))
    return keys


def is_locked_out(login: str, remote_ip: str | None) -> bool:
    counts = cache.get_many([key for key, _ in _failure_keys(login, remote_ip)])
    return any(counts.get(key, 0) >= limit for key, limit in _failure_keys(login, remote_ip))


def record_failure(login: str, remote_ip: str | None) -> None:
    for key, _ in _failure_keys(login, remote_ip):
        counters.increment(key, timeout=settings.MAILHOST_AUTH_LOCKOUT_SECONDS)


# Dovecot-style cache of recent successful verifications, keyed by a digest of
# login, secret and the stored hash: a password change invalidates it at once.
_verified: dict[str, float] = {}
_verified_lock = threading.Lock()


def _verified_key(login: str, secret: str, encoded: str) -> str:
    return hashlib.sha256(f"{login}\0{secret}\0{encoded}".encode()).hexdigest()


def _check_cached(login: str, secret: str, encoded: str) -> bool:
    key = _verified_key(login, secret, encoded)
    now = time.monotonic()
    with _verified_lock:
        expiry = _verified.get(key)
        if expiry is not None and expiry > now:
            return True
    if not check_password(secret, encoded):
        return False
    with _verified_lock:
        if len(_verified) > 10_000:
            _verified.clear()
        _verified[key] = now + settings.MAILHOST_AUTH_CACHE_SECONDS
    return True


def password_matches(login: str, secret: str, user: User | None) -> bool:
    """Whether ``secret`` is ``user``'s password. For no user (an unknown
    login) the hasher runs all the same on a fresh hash, so that a failure
    costs the same time whether or not the login exists (Django's
    ModelBackend does the same with set_password on a dummy user)."""
    if user is None:
        make_password(secret)
        return False
    return _check_cached(login, secret, user.password)


def authenticate(
    login: str, secret: str, *, remote_ip: str | None = None, protocol: str = "unknown"
) -> Mailbox | None:
    """Check a mailbox login; None on failure, on lockout, or for a disabled mailbox."""
    login = login.strip().lower()
    if is_locked_out(login, remote_ip):
        log.warning("auth locked out login=%s ip=%s protocol=%s", login, remote_ip, protocol)
        metrics.AUTH_FAILURES.labels(protocol, "locked_out").inc()
        return None
    # Mail programs may sign in with an app password, the web never does.
    app_password = (app_passwords.matching(login, secret)
                    if protocol != app_passwords.WEB else None)
    if app_password is not None:
        mailbox: Mailbox | None = app_password.mailbox
        ok = True
    else:
        mailbox = _signing_in(login) if "@" in login else None
        ok = password_matches(login, secret, mailbox.user if mailbox else None)
        if ok and mailbox is not None and not app_passwords.password_accepted(mailbox, protocol):
            # A failure like any other (no hint that the password was right).
            log.info("auth refused (app password required) login=%s ip=%s protocol=%s",
                     login, remote_ip, protocol)
            ok = False
    if not ok or mailbox is None:
        record_failure(login, remote_ip)
        log.info("auth failed login=%s ip=%s protocol=%s", login, remote_ip, protocol)
        metrics.AUTH_FAILURES.labels(protocol, "password").inc()
        return None
    if not (mailbox.active and mailbox.domain.active and mailbox.user.is_active):
        log.info("auth refused (disabled) login=%s ip=%s protocol=%s", login, remote_ip, protocol)
        metrics.AUTH_FAILURES.labels(protocol, "disabled").inc()
        return None
    if app_password is not None:
        app_passwords.note_use(app_password, remote_ip=remote_ip, protocol=protocol)
    log.info("auth ok login=%s ip=%s protocol=%s app_password=%s", login, remote_ip, protocol,
             app_password.name if app_password else "-")
    return mailbox


def _signing_in(address: str) -> Mailbox | None:
    """The mailbox with its user and domain, in one query compiled once:
    every IMAP and POP3 login reads it."""
    row = _SIGNING_IN.first(address)
    if row is None:
        return None
    mailbox_end = len(_MAILBOX_FIELDS)
    user_end = mailbox_end + len(_USER_FIELDS)
    mailbox = Mailbox.from_db(DEFAULT_DB_ALIAS, _MAILBOX_FIELDS, row[:mailbox_end])
    mailbox.user = User.from_db(DEFAULT_DB_ALIAS, _USER_FIELDS, row[mailbox_end:user_end])
    mailbox.domain = Domain.from_db(DEFAULT_DB_ALIAS, _DOMAIN_FIELDS, row[user_end:])
    return mailbox


_MAILBOX_FIELDS, _USER_FIELDS, _DOMAIN_FIELDS = (
    [f.attname for f in model._meta.concrete_fields] for model in (Mailbox, User, Domain))
_SIGNING_IN = CompiledQuery(lambda address: Mailbox.objects.filter(address=address).order_by()
                            .values_list(*_MAILBOX_FIELDS, *(f"user__{f}" for f in _USER_FIELDS),
                                         *(f"domain__{f}" for f in _DOMAIN_FIELDS))[:1], str)


# One semaphore per event loop: asyncio primitives belong to the loop they run on.
_hash_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def aauthenticate(
    login: str, secret: str, *, remote_ip: str | None = None, protocol: str = "unknown"
) -> Mailbox | None:
    """authenticate() off the event loop, with a bounded number of hash
    verifications at once so that a flood of logins cannot starve the loop's
    thread pool (each Argon2 check costs tens of milliseconds of CPU)."""
    loop = asyncio.get_running_loop()
    slots = _hash_slots.get(loop)
    if slots is None:
        slots = _hash_slots[loop] = asyncio.Semaphore(settings.MAILHOST_AUTH_CONCURRENCY)
    async with slots:
        return await database_sync_to_async(authenticate)(
            login, secret, remote_ip=remote_ip, protocol=protocol
        )
