from django.apps import AppConfig


class Pop3Config(AppConfig):
    name = "apps.pop3"
    label = "pop3"
    verbose_name = "POP3"

    def ready(self) -> None:
        from apps.pop3 import services
        from apps.store import hooks

        # Sizes of collected blobs and hidden marks of expunged messages go
        # with them (rows without a foreign key, so that none keeps mail alive).
        hooks.register_collection_listener(services.forget_collected)
