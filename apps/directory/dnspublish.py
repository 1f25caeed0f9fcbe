"""Publishing a domain's records by RFC 2136 dynamic updates, signed with TSIG.

``plan`` computes the records the domain needs (apps/directory/dns.py), reads
what its primary server holds at the names and types Mailhost owns, and returns
the difference and any drift (a record of ours changed by hand since we last
wrote it); ``apply`` sends the difference as one update. Mailhost owns:
- at every name it publishes, the whole RRset of that type (MX, SRV, CNAME,
  a DKIM selector's TXT) -- except
- TXT at names other people share (the apex, _dmarc, _mta-sts, _smtp._tls),
  where only the values of our kind are ours (SPF's "v=spf1", DMARC's
  "v=DMARC1", …): a site verification TXT beside our SPF is left alone;
- the TXT of every selector of the domain's keys, also once a key is withdrawn
  (its record is then deleted), and whatever it published before.
Records at any other name or type are never read or written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.directory.audit import Actor, record
from apps.directory.dns import TTL, dns_records, zone_lines
from apps.directory.models import DnsUpdateTarget, Domain
from mailhost.dns import answer_text
from mailhost.errors import Invalid, MailhostError
from mailhost.sealing import InvalidToken, seal, unseal

log = logging.getLogger(__name__)

# The sealing purpose of TSIG secrets (mailhost/sealing.py).
_SEALED_TSIG = b"mailhost tsig secret"
# A DKIM selector's name holds one key record: its whole TXT RRset is ours. At
# any other name, other TXT records may live beside ours (only our kind is ours).
_DKIM_LABEL = "._domainkey."

Key = tuple[str, str]  # (absolute name, type)


class PublishError(MailhostError):
    """The DNS server could not be read or updated."""

    code = "dns_publish_error"
    user_fault = False


@dataclass(frozen=True)
class Change:
    action: str  # "add" or "delete"
    name: str  # absolute, with its final dot
    type: str
    value: str  # record data in zone-file syntax

    def __str__(self) -> str:
        sign = "+" if self.action == "add" else "-"
        return f"{sign} {self.name} {TTL} IN {self.type} {self.value}"


@dataclass(frozen=True)
class Drift:
    """Our records at a name as we published them and as found now."""

    name: str
    type: str
    published: list[str]
    found: list[str]


@dataclass
class Plan:
    target: DnsUpdateTarget
    changes: list[Change]
    drift: list[Drift]
    # Everything found at each owned name and type, ours or not: the update's
    # prerequisites (RFC 2136 §2.4) require the server to hold exactly this.
    found: dict[Key, list[str]] = field(default_factory=dict)
    # What is ours after the update, by "name TYPE" (DnsUpdateTarget.published).
    ours: dict[str, list[str]] = field(default_factory=dict)


# --- the target and its key -------------------------------------------------------


def set_target(domain: Domain, *, server: str, port: int = 53, zone: str = "", key_name: str,
               algorithm: str = DnsUpdateTarget.Algorithm.HMAC_SHA256, secret: str | None = None,
               actor: Actor | None = None) -> DnsUpdateTarget:
    """Create or change ``domain``'s update target. ``secret`` (base64) None
    keeps the stored one; "" drops it (MAILHOST_DNS_TSIG_KEYS then has it)."""
    server, zone, key_name = server.strip(), zone.strip().rstrip("."), key_name.strip()
    if not server:
        raise Invalid("the server's address is needed", field="server")
    if not 0 < port < 65536:
        raise Invalid(f"{port} is not a port", field="port")
    if algorithm not in DnsUpdateTarget.Algorithm.values:
        raise Invalid(f"unknown TSIG algorithm {algorithm}", field="algorithm")
    try:
        dns.name.from_text(key_name)
    except dns.exception.DNSException:
        raise Invalid(f"{key_name!r} is not a key name", field="key_name") from None
    if zone and not (domain.name == zone or domain.name.endswith(f".{zone}")):
        raise Invalid(f"{domain.name} is not in zone {zone}", field="zone")
    if secret:
        try:
            dns.tsigkeyring.from_text({key_name: secret})
        except (ValueError, dns.exception.DNSException):
            raise Invalid("the secret is not base64", field="secret") from None
    with transaction.atomic():
        target, created = DnsUpdateTarget.objects.get_or_create(
            domain=domain, defaults={"server": server, "key_name": key_name})
        before = {"server": target.server, "port": target.port, "zone": target.zone,
                  "key_name": target.key_name, "algorithm": target.algorithm}
        target.server, target.port, target.zone = server, port, zone
        target.key_name, target.algorithm = key_name, algorithm
        changes = {name: [None if created else old, getattr(target, name)]
                   for name, old in before.items()
                   if created or old != getattr(target, name)}
        if secret is not None:
            target.sealed_secret = seal(_SEALED_TSIG, secret) if secret else ""
            changes["secret"] = "changed" if secret else "removed"
        target.save()
        record(actor, "create" if created else "update", "dns target", domain.name,
               domain_name=domain.name, changes=changes)
    return target


def remove_target(domain: Domain, *, actor: Actor | None = None) -> None:
    with transaction.atomic():
        if DnsUpdateTarget.objects.filter(domain=domain).delete()[0]:
            record(actor, "delete", "dns target", domain.name, domain_name=domain.name)


def target_of(domain: Domain) -> DnsUpdateTarget | None:
    return DnsUpdateTarget.objects.filter(domain=domain).first()


def configured_keys() -> dict[str, tuple[str | None, str]]:
    """MAILHOST_DNS_TSIG_KEYS: ``[algorithm:]name:secret`` entries, one a line
    or comma-separated (the form of ``nsupdate -y``), by key name."""
    keys = {}
    for entry in settings.MAILHOST_DNS_TSIG_KEYS.replace(",", "\n").splitlines():
        parts = entry.strip().split(":")
        if len(parts) == 2:
            keys[_key_name(parts[0])] = (None, parts[1])
        elif len(parts) == 3:
            keys[_key_name(parts[1])] = (parts[0], parts[2])
    return keys


def _key_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _tsig(target: DnsUpdateTarget) -> dns.tsig.Key:
    algorithm = target.algorithm
    if target.sealed_secret:
        try:
            secret = unseal(_SEALED_TSIG, target.sealed_secret)
        except InvalidToken:
            raise PublishError("the stored TSIG secret cannot be read (SECRET_KEY changed?); "
                               "enter it again") from None
    else:
        configured = configured_keys().get(_key_name(target.key_name))
        if configured is None:
            raise PublishError(f"no secret for TSIG key {target.key_name}: enter it, or "
                               "name it in MAILHOST_DNS_TSIG_KEYS")
        algorithm = configured[0] or algorithm
        secret = configured[1]
    return dns.tsig.Key(target.key_name, secret, algorithm)


# --- what we want, what is there ---------------------------------------------------


def desired(domain: Domain) -> dict[Key, list[str]]:
    """The records ``domain`` needs, by absolute name and type, in the
    presentation form dnspython gives."""
    wanted: dict[Key, list[str]] = {}
    for line in zone_lines(dns_records(domain, mail_host=settings.MAILHOST_HOSTNAME)):
        name, _ttl, _class, rtype, data = line.split("\t")
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, data)
        wanted.setdefault((name.lower(), rtype), []).append(rdata.to_text())
    return wanted


def _kind(value: str) -> str:
    """A TXT record's kind: its first tag ("v=spf1"), lower case."""
    text = answer_text(dns.rdata.from_text(dns.rdataclass.IN, "TXT", value))
    return text.split(";")[0].split(" ")[0].strip().lower()


def _owned_keys(domain: Domain, target: DnsUpdateTarget,
                wanted: dict[Key, list[str]]) -> dict[Key, set[str] | None]:
    """Each name and type we own, with the kinds of TXT that are ours there
    (None: the whole RRset is ours)."""
    owned: dict[Key, set[str] | None] = {}
    previous = {tuple(key.split(" ")): values for key, values in target.published.items()}
    selectors = domain.dkim_keys.values_list("selector", flat=True)
    dkim_names = {(f"{selector}._domainkey.{domain.name}.", "TXT") for selector in selectors}
    for key, values in [*wanted.items(), *previous.items(), *((k, []) for k in dkim_names)]:
        name, rtype = key
        if rtype != "TXT" or _DKIM_LABEL in name:
            owned[name, rtype] = None
        else:
            kinds = owned.setdefault((name, rtype), set())
            assert kinds is not None
            kinds.update(_kind(value) for value in values)
    return owned


def _ours(kinds: set[str] | None, values: Iterable[str]) -> list[str]:
    return sorted(v for v in values if kinds is None or _kind(v) in kinds)


def _read(target: DnsUpdateTarget, keys: Iterable[Key]) -> dict[Key, list[str]]:
    """What the primary holds at each name and type: queries over TCP (a TXT
    RRset may not fit a UDP answer) signed with the target's key."""
    key = _tsig(target)
    found: dict[Key, list[str]] = {}
    for name, rtype in keys:
        query = dns.message.make_query(name, rtype)
        query.use_tsig(keyring=key)
        response = _exchange(target, query, "read")
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise PublishError(f"{target.server} answered {dns.rcode.to_text(rcode)} "
                               f"for {name} {rtype}")
        rrset = next((r for r in response.answer if r.name == dns.name.from_text(name)
                      and r.rdtype == dns.rdatatype.from_text(rtype)), None)
        found[name, rtype] = sorted(rdata.to_text() for rdata in rrset or ())
    return found


def _exchange(target: DnsUpdateTarget, message: dns.message.Message,
              doing: str) -> dns.message.Message:
    try:
        return dns.query.tcp(message, target.server, port=target.port,
                             timeout=settings.MAILHOST_DNS_TIMEOUT)
    except dns.tsig.PeerError as error:
        # RFC 8945 §5.3.2: the server did not accept our key or signature.
        raise PublishError(f"{target.server} refused TSIG key {target.key_name} "
                           f"({type(error).__name__.removeprefix('Peer')}: wrong key "
                           "name, algorithm or secret)") from None
    except dns.message.UnknownTSIGKey:
        raise PublishError(f"{target.server} does not know TSIG key {target.key_name}") from None
    except (dns.exception.DNSException, OSError) as error:
        raise PublishError(f"cannot {doing} the zone at {target.server} port "
                           f"{target.port}: {error or type(error).__name__}") from None


def plan(domain: Domain) -> Plan:
    """The update that makes the zone hold what ``domain`` needs, and the
    drift since our last update."""
    target = target_of(domain)
    if target is None:
        raise Invalid(f"{domain.name} has no DNS update target", field="domain")
    wanted = desired(domain)
    owned = _owned_keys(domain, target, wanted)
    found = _read(target, owned)
    changes, drift, ours = [], [], {}
    for (name, rtype), kinds in owned.items():
        have = _ours(kinds, found[name, rtype])
        want = sorted(wanted.get((name, rtype), []))
        label = f"{name} {rtype}"
        if want:
            ours[label] = want
        published = target.published.get(label)
        if published is not None and have != published:
            drift.append(Drift(name, rtype, published, have))
        changes += [Change("delete", name, rtype, value) for value in have if value not in want]
        changes += [Change("add", name, rtype, value) for value in want if value not in have]
    return Plan(target, changes, drift, found, ours)


# --- the update -------------------------------------------------------------------


def publish_all() -> None:
    """Every domain with an update target brought up to date (beat, hourly):
    records are kept current, a hand edit of ours undone. Beat sends it through
    apps.store.tasks.run_periodic, whose lease makes one node at a time run it."""
    for target in DnsUpdateTarget.objects.select_related("domain").filter(
            domain__active=True):
        try:
            apply(target.domain)
        except MailhostError as error:
            log.warning("could not publish the records of %s: %s",
                        target.domain.name, error.message)


def apply(domain: Domain, *, actor: Actor | None = None) -> Plan:
    """Compute the plan and send it as one update; each change, and each
    drift it undoes, is recorded in the audit log. Returns the plan applied
    (no changes: nothing sent)."""
    update_plan = plan(domain)
    target = update_plan.target
    if update_plan.changes:
        _send(target, update_plan)
    with transaction.atomic():
        target.published = update_plan.ours
        target.last_applied = timezone.now()
        target.save(update_fields=["published", "last_applied"])
        for drift in update_plan.drift:
            record(actor, "drift", "dns record", f"{drift.name} {drift.type}",
                   domain_name=domain.name,
                   changes={"published": drift.published, "found": drift.found})
        for change in update_plan.changes:
            record(actor, "publish" if change.action == "add" else "withdraw", "dns record",
                   f"{change.name} {change.type} {change.value}", domain_name=domain.name,
                   changes={"server": f"{target.server}:{target.port}"})
    return update_plan


def _send(target: DnsUpdateTarget, update_plan: Plan) -> None:
    update = dns.update.UpdateMessage(target.zone_name, keyring=_tsig(target))
    touched = dict.fromkeys((change.name, change.type) for change in update_plan.changes)
    for name, rtype in touched:
        held = update_plan.found[name, rtype]
        if held:
            # RFC 2136 §2.4.2: the RRset exists, value dependent -- it is as we
            # read it, so that a change made meanwhile is not overwritten.
            update.present(name, dns.rdataset.from_text_list("IN", rtype, 0, held))
        else:
            # RFC 2136 §2.4.3: the RRset does not exist.
            update.absent(name, rtype)
    for change in update_plan.changes:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, change.type, change.value)
        if change.action == "delete":
            # RFC 2136 §2.5.4: delete one RR from an RRset.
            update.delete(change.name, rdata)
        else:
            # RFC 2136 §2.5.1: add to an RRset.
            update.add(change.name, TTL, rdata)
    response = _exchange(target, update, "update")
    rcode = response.rcode()
    if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN,
                 dns.rcode.YXDOMAIN):
        raise PublishError("the zone changed while the update was made "
                           f"({dns.rcode.to_text(rcode)}); nothing was changed, look again")
    if rcode == dns.rcode.NOTAUTH:
        raise PublishError(f"{target.server} is not authoritative for {target.zone_name} "
                           f"or refused key {target.key_name} (NOTAUTH)")
    if rcode != dns.rcode.NOERROR:
        raise PublishError(f"{target.server} refused the update: {dns.rcode.to_text(rcode)}")
