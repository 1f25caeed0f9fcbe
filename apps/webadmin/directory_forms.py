"""Forms of the panel's directory pages. They check shapes only (numbers,
required fields); every rule (address syntax, duplicates, limits, password
strength) is the directory services', whose errors land on the field they
name through ``show_error``."""

from __future__ import annotations

import re
from decimal import Decimal

from django import forms

from apps.directory.models import DnsUpdateTarget, Domain, Role
from mailhost.errors import MailhostError

MB = 1024 * 1024
# Quotas are bytes in a 64-bit column.
MAX_BYTES = 2**63 - 1
MAX_MB = MAX_BYTES // MB


def show_error(form: forms.Form, error: MailhostError, *, fields: dict[str, str] | None = None,
               ) -> None:
    """Put a service's error on the form field it is about (``fields`` maps a
    service's field name to the form's where they differ), else on the form."""
    name = str(error.context.get("field", ""))
    name = (fields or {}).get(name, name)
    form.add_error(name if name in form.fields else None, error.message)


UNITS = {"": MB, "b": 1, "k": 1024, "kb": 1024, "m": MB, "mb": MB, "g": 1024 * MB,
         "gb": 1024 * MB, "t": 1024**2 * MB, "tb": 1024**2 * MB}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def size_text(size: int) -> str:
    """A byte count as the size field shows it, exactly: "2 GB", "500 MB"."""
    for unit in ("TB", "GB", "MB", "KB"):
        if size and size % UNITS[unit.lower()] == 0:
            return f"{size // UNITS[unit.lower()]} {unit}"
    return f"{size} B"


class SizeField(forms.Field):
    """A size in bytes, typed as "500 MB", "2 GB", "1.5 GB" or a bare number
    of MB."""

    def to_python(self, value: object) -> int | None:  # type: ignore[override]
        text = str(value or "").strip()
        if not text:
            return None
        match = SIZE.match(text[:40])
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in UNITS:
            raise forms.ValidationError("Give a size such as 500 MB or 2 GB.")
        size = int(Decimal(match.group(1)) * UNITS[unit])
        if size > MAX_BYTES:
            raise forms.ValidationError("That is more than can be stored.")
        return size

    def prepare_value(self, value: object) -> object:
        return size_text(value) if isinstance(value, int) else value


def megabytes(label: str, *, required: bool = True, help_text: str = "") -> SizeField:
    return SizeField(label=label, required=required,
                     widget=forms.TextInput(attrs={"inputmode": "decimal", "maxlength": 40}),
                     help_text=help_text or "such as 500 MB or 2 GB; 0 for unlimited")


def lines(text: str) -> list[str]:
    """One address per line (commas and spaces also separate)."""
    return [part for part in text.replace(",", " ").split() if part]


def spam_threshold(help_text: str) -> forms.FloatField:
    return forms.FloatField(label="Spam threshold", required=False, min_value=0.1,
                            max_value=1000, help_text=help_text)


# --- domains ---------------------------------------------------------------------


class DomainCreateForm(forms.Form):
    name = forms.CharField(label="Domain name", max_length=255,
                           widget=forms.TextInput(attrs={"autocomplete": "off"}))
    default_quota = megabytes("Default quota", required=False,
                              help_text="for new mailboxes, such as 1 GB; empty: the site default")
    max_mailboxes = forms.IntegerField(label="Mailbox limit", min_value=0, max_value=2**31 - 1,
                                       initial=0, help_text="0 for unlimited")


class DomainEditForm(forms.Form):
    default_quota = megabytes("Default quota",
                              help_text="for new mailboxes, such as 1 GB; 0 for unlimited")
    max_mailboxes = forms.IntegerField(label="Mailbox limit", min_value=0, max_value=2**31 - 1,
                                       help_text="0 for unlimited")
    greylisting = forms.BooleanField(
        label="Greylisting", required=False,
        help_text="defer mail from first-time senders for a few minutes")
    spam_threshold = spam_threshold(
        "score from which mail goes to Junk, for mailboxes without their own; "
        "empty: the site default")
    app_passwords_required = forms.BooleanField(
        label="App passwords required", required=False,
        help_text="mail programs sign in with app passwords only; mailbox passwords sign in "
                  "to the webmail")
    second_factor_required = forms.BooleanField(
        label="Two-factor sign-in required", required=False,
        help_text="mailbox users set up a code from an authenticator app before they can "
                  "read mail in the webmail; mail programs then need app passwords")
    active = forms.BooleanField(label="Active", required=False,
                                help_text="a disabled domain refuses its mail and logins")


class DnsTargetForm(forms.Form):
    """Where the domain's records are published by dynamic updates (RFC 2136)."""

    server = forms.CharField(label="Primary server", max_length=255,
                             help_text="address of the zone's primary DNS server")
    port = forms.IntegerField(label="Port", min_value=1, max_value=65535, initial=53)
    zone = forms.CharField(label="Zone", max_length=255, required=False,
                           help_text="the zone holding the domain; empty: the domain itself")
    key_name = forms.CharField(label="TSIG key name", max_length=255)
    algorithm = forms.ChoiceField(label="TSIG algorithm", choices=DnsUpdateTarget.Algorithm.choices)
    secret = forms.CharField(
        label="TSIG secret", required=False, max_length=512,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="base64; kept encrypted. Empty: keep the stored one, or the one "
                  "MAILHOST_DNS_TSIG_KEYS names for this key")


# --- mailboxes -------------------------------------------------------------------


class PasswordInput(forms.PasswordInput):
    """A password box that static/webadmin/password.js gives a generator, a
    show/hide button and strength feedback."""

    def __init__(self) -> None:
        super().__init__(attrs={"autocomplete": "new-password", "data-password-tools": "",
                                "minlength": 8}, render_value=True)


class MailboxCreateForm(forms.Form):
    address = forms.CharField(label="Address", max_length=320,
                              widget=forms.TextInput(attrs={"autocomplete": "off"}))
    password = forms.CharField(label="Password", strip=False, max_length=4096,
                               widget=PasswordInput())
    quota = megabytes("Quota", required=False,
                      help_text="such as 500 MB or 2 GB; 0 for unlimited; "
                                "empty: the domain's default")
    display_name = forms.CharField(label="Display name", max_length=200, required=False)


class MailboxEditForm(forms.Form):
    display_name = forms.CharField(label="Display name", max_length=200, required=False)
    quota = megabytes("Quota")
    active = forms.BooleanField(label="Active", required=False,
                                help_text="a disabled mailbox refuses its mail and logins")
    forward_to = forms.CharField(
        label="Forward to", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="addresses each message also goes to, one per line; empty: no forwarding")
    forward_keep_copy = forms.BooleanField(label="Keep a copy when forwarding", required=False)
    leave_copy = forms.BooleanField(
        label="POP3: leave a copy on the server", required=False,
        help_text="messages a POP3 client deletes stay readable over IMAP and webmail")
    spam_threshold = spam_threshold("empty: the domain's threshold")


class PasswordForm(forms.Form):
    password = forms.CharField(label="New password", strip=False, max_length=4096,
                               widget=PasswordInput())


class CsvImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="columns address, password, and optionally quota_mb and display_name; "
                  "a first row with these names is a header")


# --- aliases ---------------------------------------------------------------------


class AliasCreateForm(forms.Form):
    address = forms.CharField(label="Address", max_length=320,
                              help_text="name@domain, or @domain for a catch-all")
    destinations = forms.CharField(
        label="Destinations", widget=forms.Textarea(attrs={"rows": 4}),
        help_text="local mailboxes or external addresses, one per line")


class AliasEditForm(forms.Form):
    destinations = forms.CharField(
        label="Destinations", widget=forms.Textarea(attrs={"rows": 4}),
        help_text="local mailboxes or external addresses, one per line")
    active = forms.BooleanField(label="Active", required=False)


# --- administrators --------------------------------------------------------------

ADMIN_ROLE_CHOICES = [(Role.DOMAIN_ADMIN.value, Role.DOMAIN_ADMIN.label),
                      (Role.SUPERADMIN.value, Role.SUPERADMIN.label)]


def domain_choice() -> forms.ModelMultipleChoiceField:
    return forms.ModelMultipleChoiceField(
        label="Domains", queryset=Domain.objects.all(), required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="the domains a domain administrator manages (Ctrl or ⌘ to pick several)")


class AdminCreateForm(forms.Form):
    email = forms.CharField(label="Email", max_length=320)
    password = forms.CharField(label="Password", strip=False, max_length=4096,
                               widget=PasswordInput())
    display_name = forms.CharField(label="Display name", max_length=200, required=False)
    role = forms.ChoiceField(label="Role", choices=ADMIN_ROLE_CHOICES)
    domains = domain_choice()


class AdminEditForm(forms.Form):
    display_name = forms.CharField(label="Display name", max_length=200, required=False)
    role = forms.ChoiceField(label="Role", choices=ADMIN_ROLE_CHOICES)
    domains = domain_choice()
    is_active = forms.BooleanField(label="Active", required=False)
    password = forms.CharField(label="New password", strip=False, max_length=4096,
                               required=False, widget=PasswordInput(),
                               help_text="empty: keep the current password")


# --- audit log -------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="Who", required=False, max_length=320)
    object = forms.CharField(label="Object", required=False, max_length=320)
    since = forms.DateField(label="From", required=False,
                            widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="Until", required=False,
                            widget=forms.DateInput(attrs={"type": "date"}))


class MailImportForm(forms.Form):
    file = forms.FileField(label="mbox file",
                           help_text="mboxrd or mboxo, as mutt, Thunderbird or exportmail "
                                     "write it; messages there already are skipped")
    folder = forms.CharField(label="Into folder", max_length=1000, initial="INBOX")


class ImapImportForm(forms.Form):
    host = forms.CharField(label="IMAP server", max_length=255,
                           help_text="the host name of the old mail server")
    port = forms.IntegerField(label="Port", required=False, min_value=1, max_value=65535,
                              help_text="empty: 993 with TLS, else 143")
    tls = forms.ChoiceField(label="Security", initial="ssl", choices=[
        ("ssl", "TLS (IMAPS)"), ("starttls", "STARTTLS"), ("none", "none (plain text)")])
    verify_certificate = forms.BooleanField(
        label="Check the server's certificate", required=False, initial=True)
    user = forms.CharField(label="User name", max_length=320)
    password = forms.CharField(
        label="Remote password", strip=False, max_length=4096,
        # The old server's password as it is: no generator, not saved by the browser.
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="kept encrypted until the import ends, then wiped")
