from django.apps import AppConfig


class CertificatesConfig(AppConfig):
    """The listeners' TLS certificate: where it lives, and its issuance and
    renewal over ACME (RFC 8555)."""

    name = "apps.certificates"
    label = "certificates"
    verbose_name = "TLS certificates"
