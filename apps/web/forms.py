from __future__ import annotations

from django import forms


class SignInForm(forms.Form):
    email = forms.CharField(
        label="Email", max_length=320,
        widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(
        label="Password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
