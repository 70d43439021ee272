"""Checks at the start of a command that turn a doomed run into an immediate, actionable error.

The settings themselves are checked by the app's system checks (`embeddings.checks`); these
look at the database the run is about to use.
"""

from django.db import OperationalError, connection

from embeddings.app_settings import EmbeddingSettings
from embeddings.exceptions import ConfigurationError
from embeddings.models import embedding_column_type


def vector_column_dimensions() -> int | None:
    """The size `clips.embedding` really has in the database (None: no such column yet)."""
    column = embedding_column_type()
    return column[1] if column else None


def preflight(config: EmbeddingSettings) -> None:
    """Raise ConfigurationError unless the database answers and its column fits the served
    version (`config` comes from `served_settings`)."""
    try:
        connection.ensure_connection()
    except OperationalError as err:
        raise ConfigurationError(
            f"cannot reach the database ({str(err).strip()}): check DATABASE_URL, "
            "or unset it to use the embedded PostgreSQL"
        ) from None
    column = embedding_column_type()
    if column is None:
        raise ConfigurationError("table clips has no embedding column: run `manage.py migrate`")
    storage, actual = column
    if config.version_id is None:  # no version yet: the column is not of the settings' size
        raise ConfigurationError(
            f"clips.embedding holds {actual}-dimensional {storage} vectors but "
            f"EMBEDDING_DIMENSIONS={config.dimensions}: set EMBEDDING_DIMENSIONS={actual}, or "
            f"run `manage.py resize_embeddings --dimensions {config.dimensions}` (a switch: "
            "search keeps answering while the new vectors are made)"
        )
    if config.source == "clips" and column != (config.storage, config.dimensions):
        raise ConfigurationError(
            f"clips.embedding is {storage}({actual}) but the served version is "
            f"{config.storage}({config.dimensions}): run `manage.py switch_embeddings --status` "
            "and re-run the switch it shows to finish it"
        )
