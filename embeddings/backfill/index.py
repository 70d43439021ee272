"""The HNSW indexes: the clips column's, dropped and rebuilt around large writes, and the one
over a version's build rows.

Every row written while an HNSW index exists pays index maintenance (measured here: ~130
rows/s with it, >10,000 rows/s without); building it once afterwards is far cheaper. A build
gets pgvector's advice: `maintenance_work_mem` large enough for the graph, and a parallel
maintenance worker.
"""

from django.db import connection

from embeddings.backfill import sql
from embeddings.models import Clip, embedding_column_type

MAINTENANCE_WORK_MEM = "1GB"
PARALLEL_MAINTENANCE_WORKERS = "1"  # with the leader, both of this machine's cores


def index_state(name: str) -> bool | None:
    """True: the index exists and is valid; False: a CONCURRENTLY build of it died; None: none."""
    with connection.cursor() as cursor:
        cursor.execute(sql.INDEX_STATE, [name])
        row = cursor.fetchone()
    return None if row is None else row[0]


def hnsw_index_exists() -> bool:
    return index_state(sql.HNSW_INDEX_NAME) is True


def drop_hnsw_index() -> None:
    """CONCURRENTLY (outside a transaction): waits for the searches using it instead of
    queueing new ones behind it."""
    how = not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute(sql.drop_index(sql.HNSW_INDEX_NAME, concurrently=how))


def _build(name: str, create: str, maintenance_work_mem: str) -> None:
    """Create an index unless a valid one exists (a half-built one is dropped first)."""
    state = index_state(name)
    if state:
        return
    with connection.cursor() as cursor:
        if state is False:
            cursor.execute(sql.drop_index(name))
        cursor.execute(
            sql.MAINTENANCE_SETTINGS, [maintenance_work_mem, PARALLEL_MAINTENANCE_WORKERS]
        )
        cursor.execute(create)


def build_hnsw_index(
    maintenance_work_mem: str = MAINTENANCE_WORK_MEM, *, concurrently: bool = False
) -> None:
    """(Re)create the clips column's index for the column's storage, and any other index of
    the model a column replacement dropped. CONCURRENTLY: searches and writes go on meanwhile
    (outside a transaction only)."""
    storage, _ = embedding_column_type()
    create = sql.create_clips_hnsw_index(storage, concurrently=concurrently)
    _build(sql.HNSW_INDEX_NAME, create, maintenance_work_mem)
    with connection.schema_editor(atomic=False) as editor:
        for index in Clip._meta.indexes:
            if index.name != sql.HNSW_INDEX_NAME and index_state(index.name) is not True:
                if index_state(index.name) is False:
                    editor.execute(sql.drop_index(index.name))
                editor.execute(index.create_sql(Clip, editor, concurrently=concurrently))


def build_rows_index_name(version_id: int) -> str:
    return sql.HNSW_INDEX_NAME_OF_BUILD.format(version=int(version_id))


def build_rows_index(version_id: int, storage: str, dimensions: int) -> None:
    """The HNSW index a version is searched through while it is served from its build rows."""
    create = sql.create_build_hnsw_index(version_id, storage, dimensions)
    _build(build_rows_index_name(version_id), create, MAINTENANCE_WORK_MEM)


def drop_build_rows_index(version_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql.drop_index(build_rows_index_name(version_id)))
