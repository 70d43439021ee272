"""Checks at the start of a command that turn a doomed run into an immediate, actionable error.

The settings themselves are checked by the app's system checks (`embeddings.checks`); these
look at the database the run is about to use.
"""

from django.db import OperationalError, connection

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill import sql
from embeddings.exceptions import ConfigurationError
from embeddings.models import Clip


def vector_column_dimensions() -> int | None:
    """The size `clips.embedding` really has in the database (None: no such column yet)."""
    with connection.cursor() as cursor:
        cursor.execute(sql.VECTOR_COLUMN_SIZE, [Clip._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row else None


def preflight(config: EmbeddingSettings) -> None:
    """Raise ConfigurationError unless the database answers and its column fits the settings."""
    try:
        connection.ensure_connection()
    except OperationalError as err:
        raise ConfigurationError(
            f"cannot reach the database ({str(err).strip()}): check DATABASE_URL, "
            "or unset it to use the embedded PostgreSQL"
        ) from None
    actual = vector_column_dimensions()
    if actual is None:
        raise ConfigurationError("table clips has no embedding column: run `manage.py migrate`")
    if actual != config.dimensions:
        raise ConfigurationError(
            f"clips.embedding holds {actual}-dimensional vectors but EMBEDDING_DIMENSIONS="
            f"{config.dimensions}: set EMBEDDING_DIMENSIONS={actual}, or run `manage.py "
            f"resize_embeddings` to make the column vector({config.dimensions}) (it clears the "
            "old vectors and rebuilds the index)"
        )
