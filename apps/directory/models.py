from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager
from django.db import models
from django.utils import timezone


class Domain(models.Model):
    """A hosted mail domain, stored as its lower-case IDNA A-label."""

    name = models.CharField(max_length=255, unique=True)
    active = models.BooleanField(default=True)
    default_quota = models.BigIntegerField(help_text="bytes; 0 means unlimited")
    max_mailboxes = models.PositiveIntegerField(default=0, help_text="0 means unlimited")
    greylisting = models.BooleanField(default=False, help_text="defer first-time senders")
    spam_threshold = models.FloatField(
        null=True, blank=True,
        help_text="spam score filed into Junk for mailboxes without their own; "
                  "empty: the site default")
    app_passwords_required = models.BooleanField(
        default=False,
        help_text="mail programs (IMAP, POP3, SMTP, ManageSieve) sign in with app passwords "
                  "only; the mailbox password signs in to the web")
    second_factor_required = models.BooleanField(
        default=False,
        help_text="mailbox users sign in to the webmail with a TOTP code too (and mail "
                  "programs with app passwords only)")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def unicode_name(self) -> str:
        try:
            return self.name.encode("ascii").decode("idna")
        except UnicodeError:
            return self.name


class Role(models.TextChoices):
    SUPERADMIN = "superadmin", "Super administrator"
    DOMAIN_ADMIN = "domainadmin", "Domain administrator"
    MAILBOX_USER = "user", "Mailbox user"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        user = self.model(email=email.strip().lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("role", Role.SUPERADMIN)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser):
    """An account: signs in with an e-mail address. A mailbox user's account is
    its mailbox, and its password is the one password used by every protocol."""

    email = models.CharField(max_length=320, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MAILBOX_USER)
    administered_domains = models.ManyToManyField(Domain, blank=True, related_name="admins")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.SUPERADMIN, Role.DOMAIN_ADMIN)

    @property
    def is_superuser(self) -> bool:
        return self.role == Role.SUPERADMIN

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return self.is_active and self.is_superuser

    def has_module_perms(self, app_label: str) -> bool:
        return self.is_active and self.is_superuser


class Mailbox(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="mailboxes")
    local_part = models.CharField(max_length=64)
    address = models.CharField(max_length=320, unique=True)
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="mailbox")
    quota = models.BigIntegerField(help_text="bytes; 0 means unlimited")
    active = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)
    # Forwarding set by the mailbox's own user: each message also goes to these
    # addresses, and stays here too unless forward_keep_copy is off.
    forward_to = models.JSONField(default=list, blank=True)
    forward_keep_copy = models.BooleanField(default=True)
    spam_threshold = models.FloatField(
        null=True, blank=True, help_text="spam score filed into Junk; empty: the site default")
    # The mailbox's own choice (the domain may require it for all): mail
    # programs must use app passwords, the mailbox password is for the web.
    password_web_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["address"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="mailbox_unique_local"),
        ]

    def __str__(self) -> str:
        return self.address


class Alias(models.Model):
    """``address`` -> destinations. ``@domain`` (empty local part) is a catch-all."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    local_part = models.CharField(max_length=64, blank=True)
    address = models.CharField(max_length=320, unique=True)
    destinations = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return self.address

    @property
    def is_catch_all(self) -> bool:
        return self.local_part == ""


class DkimKey(models.Model):
    """A domain's DKIM signing key (RFC 6376 §3.6.1); the public half is
    published at ``<selector>._domainkey.<domain>``."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=20, default="rsa-sha256")
    private_key = models.TextField(help_text="PEM (PKCS#8)")
    public_key = models.TextField(help_text="base64 DER SubjectPublicKeyInfo, the p= tag")
    # Published while active. A key signs from ``signing_since`` (set once its
    # record is seen through the resolver) until ``retired`` (its successor
    # signs); a retired key stays published for the grace period, then it is
    # withdrawn: inactive, its private key destroyed (apps/directory/dkim_rotation.py).
    active = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)
    signing_since = models.DateTimeField(null=True, blank=True)
    retired = models.DateTimeField(null=True, blank=True)
    withdrawn = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain_id", "-created"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkimkey_unique_selector"),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"


class DnsUpdateTarget(models.Model):
    """Where a domain's records are published by RFC 2136 dynamic updates,
    signed with a TSIG key (RFC 8945). The secret is kept sealed
    (mailhost/sealing.py); empty, it comes from MAILHOST_DNS_TSIG_KEYS by key name.
    ``published`` is what Mailhost last wrote, by "name TYPE", to tell a
    hand edit (drift) from a change of ours."""

    class Algorithm(models.TextChoices):
        HMAC_SHA256 = "hmac-sha256", "HMAC-SHA256"
        HMAC_SHA384 = "hmac-sha384", "HMAC-SHA384"
        HMAC_SHA512 = "hmac-sha512", "HMAC-SHA512"
        HMAC_SHA1 = "hmac-sha1", "HMAC-SHA1"

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="dns_target")
    server = models.CharField(max_length=255, help_text="the primary server's address")
    port = models.PositiveIntegerField(default=53)
    zone = models.CharField(max_length=255, blank=True,
                            help_text="the zone holding the domain; empty: the domain itself")
    key_name = models.CharField(max_length=255, help_text="the TSIG key's name")
    algorithm = models.CharField(max_length=20, choices=Algorithm.choices,
                                 default=Algorithm.HMAC_SHA256)
    sealed_secret = models.TextField(blank=True)
    published = models.JSONField(default=dict, blank=True)
    last_applied = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.domain.name} via {self.server}:{self.port}"

    @property
    def zone_name(self) -> str:
        return self.zone or self.domain.name


class AuditEntry(models.Model):
    """One change made through the panel or the API: who, when, from where, to
    which object, and what changed (``{field: [old, new]}``; a password only
    ever as "changed"). Written by ``apps.directory.audit.record`` alone."""

    when = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    # Kept as text so that the entry still says who once the account is gone.
    actor_email = models.CharField(max_length=320, blank=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=40)
    object_type = models.CharField(max_length=40)
    object_repr = models.CharField(max_length=320, db_index=True)
    # The domain the object belongs to, by name: a domain admin sees the entries
    # of their domains, also after the object (or the domain) was deleted.
    domain_name = models.CharField(max_length=255, blank=True, db_index=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-when", "-pk"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.when:%Y-%m-%d %H:%M} {self.actor_email} {self.action} {self.object_repr}"

    @property
    def change_list(self) -> list[tuple[str, str]]:
        """Each change as (field, "old → new"), or what was said of it
        ("changed" for a password)."""
        shown = []
        for name, change in self.changes.items():
            label = name.replace("_", " ")
            if isinstance(change, list) and len(change) == 2:
                old, new = (_shown(value) for value in change)
                shown.append((label, new if change[0] is None else f"{old} → {new}"))
            else:
                shown.append((label, _shown(change)))
        return shown


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    if value is None or value == "":
        return "none"
    return str(value)


class SecondFactor(models.Model):
    """An administrator's TOTP second factor (RFC 6238). ``confirmed`` once the
    first code was checked; from then on sign-in asks for a code. Recovery
    codes are stored hashed and each one is removed when used."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="second_factor")
    secret = models.CharField(max_length=64, help_text="base32 TOTP key")
    confirmed = models.BooleanField(default=False)
    recovery_codes = models.JSONField(default=list, blank=True)
    # RFC 6238 §5.2: a code is accepted once; the time step of the last one.
    last_step = models.BigIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} {'enrolled' if self.confirmed else 'pending'}"


class SecurityKey(models.Model):
    """A WebAuthn credential (a security key, or a passkey on a phone or a
    computer) registered as a second factor: each person may have several,
    each named. The public key is the COSE key the authenticator gave at
    registration (WebAuthn Level 3 §6.5.1.1); the signature counter lets a
    cloned authenticator be noticed (§6.1.1)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="security_keys")
    name = models.CharField(max_length=100)
    # base64url of the credential ID (at most 1023 bytes, WebAuthn §4).
    credential_id = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField()
    sign_count = models.PositiveBigIntegerField(default=0)
    # Hints for the browser (usb, nfc, ble, internal, hybrid) as it reported them.
    transports = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="security_key_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.name}"


class AppPassword(models.Model):
    """A password for one mail program (IMAP, POP3, SMTP, ManageSieve): made
    by the server, shown once, revocable on its own. Its ~100 random bits need
    no slow hash: a SHA-256 digest is kept, as for API tokens."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="app_passwords")
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    last_used_protocol = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="app_password_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.name}"
