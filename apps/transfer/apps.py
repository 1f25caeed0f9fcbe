from django.apps import AppConfig


class TransferConfig(AppConfig):
    name = "apps.transfer"
    label = "transfer"
    verbose_name = "Import and export"

    def ready(self) -> None:
        # An import's upload is a blob without a message row: the collector
        # must ask before removing it. The check is a query on the model, not
        # on apps/transfer/jobs.py, whose IMAP client and sealing every
        # process would otherwise load at start (the listeners never import).
        from apps.store import hooks
        from apps.transfer.models import ImportJob

        hooks.register_blob_holder(ImportJob.held_uploads)
