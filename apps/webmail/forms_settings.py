from __future__ import annotations

from typing import Any

from django import forms

from apps.directory.models import User
from apps.webmail.forms_compose import AddressListField


class PasswordForm(forms.Form):
    old_password = forms.CharField(
        label="Current password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    new_password = forms.CharField(
        label="New password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    repeat_password = forms.CharField(
        label="New password again", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("new_password") != data.get("repeat_password"):
            self.add_error("repeat_password", "The two new passwords differ.")
        return data


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        label="Display name", required=False,
        max_length=User._meta.get_field("display_name").max_length)  # type: ignore[arg-type]
    signature = forms.CharField(
        label="Signature", required=False, strip=False,
        help_text="Added below what you write, after a “-- ” line.",
        widget=forms.Textarea(attrs={"rows": 4}))


class IdentitiesForm(forms.Form):
    """One "use" checkbox and a display name per address the user may send as."""

    def __init__(self, *args: Any, addresses: list[str], chosen: dict[str, str],
                 default_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.addresses = addresses
        for index, address in enumerate(addresses):
            self.fields[f"use_{index}"] = forms.BooleanField(
                label=f"Offer {address} as From", required=False,
                initial=address in chosen or (not chosen and index == 0))
            self.fields[f"name_{index}"] = forms.CharField(
                label=f"Name shown with {address}", required=False, max_length=200,
                initial=chosen.get(address, default_name))

    def rows(self) -> list[tuple[str, forms.BoundField, forms.BoundField]]:
        return [(address, self[f"use_{i}"], self[f"name_{i}"])
                for i, address in enumerate(self.addresses)]

    def identities(self) -> list[dict[str, str]]:
        return [{"address": address, "name": self.cleaned_data[f"name_{i}"].strip()}
                for i, address in enumerate(self.addresses) if self.cleaned_data[f"use_{i}"]]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not any(data.get(f"use_{i}") for i in range(len(self.addresses))):
            raise forms.ValidationError("Keep at least one address to send from.")
        return data


class ForwardingForm(forms.Form):
    forward_to = AddressListField(
        label="Forward my mail to", required=False,
        help_text="Addresses separated by commas; empty turns forwarding off.")
    forward_keep_copy = forms.BooleanField(label="Keep a copy here", required=False)


class VacationForm(forms.Form):
    enabled = forms.BooleanField(label="Send an automatic reply", required=False)
    subject = forms.CharField(label="Subject of the reply", required=False, max_length=200,
                              help_text="Empty: “Auto:” and the subject of the message.")
    body = forms.CharField(label="Text of the reply", required=False, strip=False,
                           widget=forms.Textarea(attrs={"rows": 5}))
    start = forms.DateField(label="First day", required=False,
                            widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="Last day", required=False,
                          widget=forms.DateInput(attrs={"type": "date"}))


class SpamForm(forms.Form):
    spam_threshold = forms.FloatField(
        label="Spam threshold", required=False,
        help_text="Mail scoring this or more goes to Junk; lower catches more. "
                  "Empty: the site's setting.")
