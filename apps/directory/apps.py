from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class DirectoryConfig(AppConfig):
    name = "apps.directory"
    label = "directory"
    verbose_name = "Directory"

    def ready(self) -> None:
        from apps.directory.models import Alias, Domain, Mailbox
        from apps.directory.services import directory_changed

        # Every write, whatever made it (services, the admin panel, a cascade),
        # invalidates the resolution caches of every process.
        for model in (Domain, Mailbox, Alias):
            post_save.connect(directory_changed, sender=model,
                              dispatch_uid=f"directory-changed-save-{model.__name__}")
            post_delete.connect(directory_changed, sender=model,
                                dispatch_uid=f"directory-changed-delete-{model.__name__}")
