from django.apps import AppConfig


class AntispamConfig(AppConfig):
    name = "apps.antispam"
    label = "antispam"
    verbose_name = "Spam and sender authentication"

    def ready(self) -> None:
        from apps.antispam import learning
        from apps.store import hooks

        # Moving mail into or out of Junk trains the classifier, whichever
        # front end (IMAP MOVE/COPY, webmail) asked the store to move it.
        hooks.register_transfer_listener(learning.on_transfer)
