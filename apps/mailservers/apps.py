from django.apps import AppConfig


class MailserversConfig(AppConfig):
    name = "apps.mailservers"
    label = "mailservers"
    verbose_name = "Mail listeners"
