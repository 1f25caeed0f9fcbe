from django.apps import AppConfig


class WebmailConfig(AppConfig):
    name = "apps.webmail"
    label = "webmail"
    verbose_name = "Webmail"
