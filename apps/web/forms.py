from __future__ import annotations

from django import forms


class SignInForm(forms.Form):
    email = forms.CharField(
        label="Email", max_length=320,
        widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(
        label="Password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code", max_length=40,
        help_text="The 6-digit code from your authenticator app, or a recovery code.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True,
                                      "inputmode": "text", "autocapitalize": "none"}))


class SecurityKeyForm(forms.Form):
    """A new security key: its name, typed by the person, and the browser's
    answer to navigator.credentials.create(), filled in by static/web/webauthn.js."""

    name = forms.CharField(
        label="Key name", max_length=100,
        help_text="Which key or device it is, such as “Blue YubiKey” or “Laptop”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}))
    credential = forms.CharField(widget=forms.HiddenInput, required=False)
