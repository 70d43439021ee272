"""Django system checks for the embedding settings, so every process refuses a bad value alike.

`manage.py check`, `backfill_embeddings`, `qcluster`, `runserver` and `migrate` all run system
checks before they start: a bad value stops each of them with the same message.
"""

from django.core.checks import Error, Warning, register

from embeddings.app_settings import embedding_settings, problems, unknown_settings
from embeddings.exceptions import ConfigurationError

TAG = "embeddings"


@register(TAG)
def check_embedding_settings(app_configs=None, **kwargs) -> list[Error]:
    try:
        config = embedding_settings()
    except ConfigurationError as err:
        return [Error(str(err), id="embeddings.E001")]
    return [Error(problem, id="embeddings.E002") for problem in problems(config)]


@register(TAG)
def check_unknown_settings(app_configs=None, **kwargs) -> list[Warning]:
    return [
        Warning(
            f"{name} is set, but no setting has that name: it is ignored"
            + (f" (did you mean {nearest}?)" if nearest else ""),
            id="embeddings.W001",
        )
        for name, nearest in unknown_settings()
    ]
