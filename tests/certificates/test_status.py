"""Which names the certificate must cover and when it is due, without a CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.certificates import services, storage
from tests.factories import make_domain


@pytest.fixture
def acme_on(settings, tmp_path: Path):
    settings.MAILHOST_ACME_DIRECTORY = "https://acme.invalid/directory"
    settings.MAILHOST_HOSTNAME = "Mail.Ours.Example."
    settings.MAILHOST_TLS_CERT = str(tmp_path / "cert.pem")
    settings.MAILHOST_TLS_KEY = str(tmp_path / "key.pem")
    return settings


def test_names_expand_per_active_hosted_domain(acme_on, db):
    make_domain("ours.example")
    make_domain("theirs.example")
    make_domain("gone.example", active=False)
    acme_on.MAILHOST_ACME_NAMES = ["mta-sts.{domain}", "autoconfig.{domain}",
                                   "webmail.ours.example", "MAIL.ours.example"]
    assert services.wanted_names() == [
        "mail.ours.example", "mta-sts.ours.example", "mta-sts.theirs.example",
        "autoconfig.ours.example", "autoconfig.theirs.example", "webmail.ours.example"]


def test_due_without_a_certificate_and_with_a_self_signed_one(acme_on, db):
    assert services.status().reason == "no certificate yet"
    storage.generate_self_signed(Path(acme_on.MAILHOST_TLS_CERT),
                                 Path(acme_on.MAILHOST_TLS_KEY), "mail.ours.example")
    state = services.status()
    assert state.due and state.reason == "the certificate is self-signed"


def test_never_due_while_acme_is_off(acme_on, db):
    acme_on.MAILHOST_ACME_DIRECTORY = ""
    assert not services.status().due
    assert services.renew() is False
    with pytest.raises(services.CertificateError, match="MAILHOST_ACME_DIRECTORY"):
        services.issue()
