"""Forms of the panel's directory pages. They check shapes only (numbers,
required fields); every rule (address syntax, duplicates, limits, password
strength) is the directory services', whose errors land on the field they
name through ``show_error``."""

from __future__ import annotations

from django import forms

from apps.directory.models import Domain, Role
from mailhost.errors import MailhostError

MB = 1024 * 1024
# Quotas are bytes in a 64-bit column.
MAX_MB = (2**63 - 1) // MB


def show_error(form: forms.Form, error: MailhostError, *, fields: dict[str, str] | None = None,
               ) -> None:
    """Put a service's error on the form field it is about (``fields`` maps a
    service's field name to the form's where they differ), else on the form."""
    name = str(error.context.get("field", ""))
    name = (fields or {}).get(name, name)
    form.add_error(name if name in form.fields else None, error.message)


def megabytes(label: str, *, required: bool = True, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(label=label, min_value=0, max_value=MAX_MB, required=required,
                              help_text=help_text or "in MB; 0 for unlimited")


def to_bytes(value: int | None) -> int | None:
    return None if value is None else value * MB


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
                              help_text="in MB for new mailboxes; empty: the site default")
    max_mailboxes = forms.IntegerField(label="Mailbox limit", min_value=0, max_value=2**31 - 1,
                                       initial=0, help_text="0 for unlimited")


class DomainEditForm(forms.Form):
    default_quota = megabytes("Default quota",
                              help_text="in MB for new mailboxes; 0 for unlimited")
    max_mailboxes = forms.IntegerField(label="Mailbox limit", min_value=0, max_value=2**31 - 1,
                                       help_text="0 for unlimited")
    greylisting = forms.BooleanField(
        label="Greylisting", required=False,
        help_text="defer mail from first-time senders for a few minutes")
    spam_threshold = spam_threshold(
        "score from which mail goes to Junk, for mailboxes without their own; "
        "empty: the site default")
    active = forms.BooleanField(label="Active", required=False,
                                help_text="a disabled domain refuses its mail and logins")


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
                      help_text="in MB; 0 for unlimited; empty: the domain's default")
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
