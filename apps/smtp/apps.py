from django.apps import AppConfig


class SmtpConfig(AppConfig):
    name = "apps.smtp"
    label = "smtp"
    verbose_name = "SMTP"
