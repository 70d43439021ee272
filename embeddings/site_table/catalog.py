"""What PostgreSQL says of `clips`: its columns, key, indexes; read, never changed."""

from django.core.management.base import CommandError
from django.db.backends.base.base import BaseDatabaseWrapper

CLIPS = "clips"
TEXT_COLUMNS = ("title", "broadcaster_name", "creator_name", "game_name")
REQUIRED_COLUMNS = (*TEXT_COLUMNS, "is_removed", "created_at")


def fetchone(connection: BaseDatabaseWrapper, query: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def column_type_of(connection: BaseDatabaseWrapper, table: str, column: str) -> str | None:
    row = fetchone(
        connection,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        [table, column],
    )
    return None if row is None else row[0]


def column_type(connection: BaseDatabaseWrapper, column: str) -> str | None:
    """The type of a column of clips, as format_type() spells it; None: no such column."""
    return column_type_of(connection, CLIPS, column)


def key_type(connection: BaseDatabaseWrapper) -> str:
    row = fetchone(
        connection,
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary AND i.indnatts = 1",
        [CLIPS],
    )
    if row is None or row[0] not in ("uuid", "bigint", "integer"):
        found = "no single-column primary key" if row is None else f"a {row[0]} primary key"
        raise CommandError(
            f"clips has {found}: the tool needs an id column of type uuid, bigint or integer",
            returncode=2,
        )
    return row[0]


def check_vector_column(connection: BaseDatabaseWrapper, storage: str, dimensions: int) -> None:
    """Exit 2 before anything is changed when the site's vectors are of another size or type."""
    found = column_type(connection, "embedding")
    wanted = f"{storage}({dimensions})"
    if found is None or found == wanted:
        return
    hint = (
        f"set EMBEDDING_DIMENSIONS={found.split('(')[1].rstrip(')')}"
        f" EMBEDDING_STORAGE={found.split('(')[0]}"
        if "(" in found
        else "give clips.embedding a fixed size"
    )
    raise CommandError(
        f"clips.embedding is {found} but the settings ask for {wanted}: {hint} to adopt the"
        " site's vectors (then `manage.py switch_embeddings` moves to another size)",
        returncode=2,
    )


def indexed_first(connection: BaseDatabaseWrapper, column: str) -> bool:
    """Whether some index of clips starts with `column` (the site's own will do)."""
    row = fetchone(
        connection,
        "SELECT 1 FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass(%s) AND a.attname = %s LIMIT 1",
        [CLIPS, column],
    )
    return row is not None


def has_hnsw_index(connection: BaseDatabaseWrapper) -> bool:
    row = fetchone(
        connection,
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = c.relam JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass(%s) AND am.amname = 'hnsw' AND a.attname = 'embedding'",
        [CLIPS],
    )
    return row is not None


def columns_only_the_site_fills(connection: BaseDatabaseWrapper, known: set[str]) -> list[str]:
    """Columns of clips that a new row must be given and the tool knows nothing of (NOT NULL,
    no default): where there are any, only the site can create clips."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
            " AND NOT attisdropped AND attnotnull AND NOT atthasdef AND attidentity = ''"
            " AND attgenerated = '' ORDER BY attnum",
            [CLIPS],
        )
        return [name for (name,) in cursor.fetchall() if name not in known]


def refuse_new_clips(connection: BaseDatabaseWrapper, known: set[str]) -> str | None:
    """Why the tool cannot create a clip here, or None when it can."""
    missing = columns_only_the_site_fills(connection, known)
    if not missing:
        return None
    return (
        f"clips belongs to the site, and a new clip needs {', '.join(missing)}, which only the"
        " site's own backend fills: create clips there (the tool embeds them as they come)"
    )
