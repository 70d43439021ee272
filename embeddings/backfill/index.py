"""Dropping and rebuilding the HNSW index around a large backfill.

Every row written while the index exists pays index maintenance (measured here: ~130 rows/s
with it, >10,000 rows/s without); building it once afterwards is far cheaper.
"""

from django.db import connection

from embeddings.backfill import sql
from embeddings.models import Clip

HNSW_MAX_DIMENSIONS = 2000  # pgvector's limit for `vector`


def _index():
    return next(index for index in Clip._meta.indexes if index.name == sql.HNSW_INDEX_NAME)


def hnsw_index_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(sql.INDEX_EXISTS, [sql.HNSW_INDEX_NAME])
        return cursor.fetchone()[0]


def drop_hnsw_index() -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql.DROP_HNSW_INDEX)


def build_hnsw_index(maintenance_work_mem: str = "1GB") -> None:
    """(Re)create the index as the model declares it, with room to build it in memory."""
    if hnsw_index_exists():
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)", [maintenance_work_mem]
        )
    with connection.schema_editor() as editor:
        editor.add_index(Clip, _index())
