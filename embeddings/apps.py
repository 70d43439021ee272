"""App configuration: the settings' system checks, the django-q2 schedule kept in step with
the settings on every migrate, and live sync's listener in every django-q2 worker."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_schedule(sender, **kwargs) -> None:
    from embeddings.app_settings import embedding_settings
    from embeddings.tasks import register_schedule

    register_schedule(embedding_settings())


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    verbose_name = "Clip embeddings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from embeddings import checks  # noqa: F401  (registers the system checks)
        from embeddings.live_sync import start_listener

        post_migrate.connect(_register_schedule, sender=self)
        post_spawn.connect(start_listener, dispatch_uid="embeddings.live_sync.start_listener")
