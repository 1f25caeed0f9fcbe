from django.apps import AppConfig


class TransferConfig(AppConfig):
    name = "apps.transfer"
    label = "transfer"
    verbose_name = "Import and export"

    def ready(self) -> None:
        # An import's upload is a blob without a message row: the collector
        # must ask before removing it.
        from apps.store import hooks
        from apps.transfer import jobs

        hooks.register_blob_holder(jobs.held_uploads)
