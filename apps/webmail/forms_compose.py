from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat

from apps.directory.addresses import normalize_address
from apps.webmail.writing import Attachment, clean_html, format_address
from mailhost.errors import Invalid


class _MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class _MultipleFileField(forms.FileField):
    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(_MultipleFileField, self).clean(f, initial) for f in files]


def parse_address_list(value: str) -> list[str]:
    """``Name <a@b>, c@d`` -> each address formatted again; Invalid on one that
    is not an address."""
    found = []
    for name, address in getaddresses([value]):
        if not address and not name:
            continue
        try:
            found.append(format_address(name, normalize_address(address)))
        except Invalid:
            raise forms.ValidationError(
                f"“{address or name}” is not an email address; separate addresses "
                "with commas.") from None
    return found


class AddressListField(forms.CharField):
    def clean(self, value: Any) -> list[str]:
        return parse_address_list(super().clean(value) or "")


class ComposeForm(forms.Form):
    from_address = forms.ChoiceField(label="From")
    to = AddressListField(label="To", required=False,
                          widget=forms.TextInput(attrs={"autocomplete": "off",
                                                        "list": "address-suggestions"}))
    cc = AddressListField(label="Cc", required=False,
                          widget=forms.TextInput(attrs={"autocomplete": "off",
                                                        "list": "address-suggestions"}))
    bcc = AddressListField(label="Bcc", required=False,
                           widget=forms.TextInput(attrs={"autocomplete": "off",
                                                         "list": "address-suggestions"}))
    subject = forms.CharField(label="Subject", required=False, max_length=998)
    body = forms.CharField(label="Message", required=False, strip=False,
                           widget=forms.Textarea(attrs={"rows": 14}))
    # Filled by the rich-text editor (static/webmail/compose.js); cleaned by nh3.
    html_body = forms.CharField(required=False, widget=forms.HiddenInput)
    attachments = _MultipleFileField(label="Attach files", required=False,
                                     widget=_MultipleFileInput)
    keep = forms.TypedMultipleChoiceField(label="Attached", required=False, coerce=int,
                                          widget=forms.CheckboxSelectMultiple)
    # The draft this form replaces, and the message whose attachments "keep" picks.
    draft = forms.IntegerField(required=False, widget=forms.HiddenInput)
    attachments_from = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # The message answered or forwarded: marked \Answered / $Forwarded once sent.
    replied = forms.IntegerField(required=False, widget=forms.HiddenInput)
    forwarded = forms.IntegerField(required=False, widget=forms.HiddenInput)
    in_reply_to = forms.CharField(required=False, widget=forms.HiddenInput)
    references = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, identities: list[tuple[str, str]],
                 kept: list[Attachment], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_bound and self.data.get("html_body", "").strip():
            # Cleaned on arrival, not only when sent: a form shown again with
            # its errors puts this back into the editor (compose.js).
            self.data = self.data.copy()
            self.data["html_body"] = clean_html(self.data["html_body"])
        self.identities = dict(identities)
        self.fields["from_address"].choices = [
            (address, format_address(name, address)) for address, name in identities]
        self.fields["keep"].choices = [
            (index, f"{a.filename} ({filesizeformat(len(a.data))})")
            for index, a in enumerate(kept)]
        self.kept = kept
        limit = settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE
        self.fields["attachments"].help_text = (
            f"All together at most {filesizeformat(limit)}.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        total = sum(f.size for f in data.get("attachments") or []) + sum(
            len(self.kept[i].data) for i in data.get("keep") or [])
        if total > settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE:
            self.add_error("attachments", (
                f"The attachments come to {filesizeformat(total)}; at most "
                f"{filesizeformat(settings.MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE)} can be sent."))
        return data
