from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "apps.store"
    label = "store"
    verbose_name = "Message store"

    def ready(self) -> None:
        from celery.signals import before_task_publish

        from apps.store.health import beat_published

        before_task_publish.connect(beat_published, dispatch_uid="store-beat-heartbeat")
