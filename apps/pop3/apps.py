from django.apps import AppConfig


class Pop3Config(AppConfig):
    name = "apps.pop3"
    label = "pop3"
    verbose_name = "POP3"
