"""Start-up checks that turn a doomed run into an immediate, actionable error (exit 2)."""

from django.db import OperationalError, connection

from embeddings.models import Clip


class ConfigurationError(Exception):
    """Something the user must fix before any run can work; the message says what."""


def check_database() -> None:
    try:
        connection.ensure_connection()
    except OperationalError as err:
        raise ConfigurationError(
            f"cannot reach the database ({str(err).strip()}): check DATABASE_URL, "
            "or unset it to use the embedded PostgreSQL"
        ) from None


def vector_column_dimensions() -> int | None:
    """The size `clips.embedding` really has in the database (None: no such column yet)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped",
            [Clip._meta.db_table],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def check_vector_column(dimensions: int) -> None:
    actual = vector_column_dimensions()
    if actual is None:
        raise ConfigurationError("table clips has no embedding column: run `manage.py migrate`")
    if actual != dimensions:
        raise ConfigurationError(
            f"clips.embedding holds {actual}-dimensional vectors but EMBEDDING_DIMENSIONS="
            f"{dimensions}: set EMBEDDING_DIMENSIONS={actual}, or run `manage.py "
            f"resize_embeddings` to make the column vector({dimensions}) (it clears the old "
            "vectors and rebuilds the index)"
        )
