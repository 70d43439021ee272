"""App configuration: keeps the django-q2 schedule in step with the settings on migrate."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_schedule(sender, **kwargs) -> None:
    from embeddings.conf import embedding_settings
    from embeddings.schedule import register_schedule

    register_schedule(embedding_settings())


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    verbose_name = "Clip embeddings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_register_schedule, sender=self)
