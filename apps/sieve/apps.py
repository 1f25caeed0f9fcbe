from django.apps import AppConfig


class SieveConfig(AppConfig):
    name = "apps.sieve"
    label = "sieve"
    verbose_name = "Sieve"
