"""The HNSW indexes: the clips column's, dropped and rebuilt around large writes, and the one
over a version's build rows.

Every row written while an HNSW index exists pays index maintenance (measured here: ~130
rows/s with it, >10,000 rows/s without); building it once afterwards is far cheaper. A build
gets pgvector's advice: `maintenance_work_mem` large enough for the graph, and parallel
maintenance workers (the session's number, at least one). A parallel build takes all of that
memory up front as one shared segment (a container's /dev/shm must hold it), so the memory
is sized to the graph rather than set high once.
"""

import logging
import re

from django.db import connection

from embeddings.backfill import sql
from embeddings.models import Clip, embedding_column_type
from embeddings.site_table.adoption import tool_indexes

logger = logging.getLogger(__name__)

# pgvector 0.8's in-memory graph, measured from its "no longer fits" notice at 768
# dimensions: each vector's values plus ~720 bytes (element, neighbour lists, allocation).
GRAPH_BYTES_PER_VECTOR = 720
VALUE_BYTES = {"vector": 4, "halfvec": 2}
PARALLEL_RESERVE = 3 * 2**20  # of a parallel build's area, pgvector keeps this for itself
LEAST_BUILD_MEMORY = 64 * 2**20  # PostgreSQL's default maintenance_work_mem
MOST_BUILD_MEMORY = 2**30  # unless the session's maintenance_work_mem is higher
CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX ")
OPCLASS = re.compile(r"\b(vector|halfvec)_(cosine_ops|l2_ops|ip_ops|l1_ops)\b")


def build_memory(vectors: int, storage: str, dimensions: int, session_setting: int) -> int:
    """Bytes of `maintenance_work_mem` for a graph of `vectors`: what it needs with a tenth to
    spare, at most 1 GB or the session's setting if higher (whoever raised it, on the server
    or for the connection, has that memory to give)."""
    need = vectors * (dimensions * VALUE_BYTES[storage] + GRAPH_BYTES_PER_VECTOR)
    need = int(need * 1.1) + PARALLEL_RESERVE
    most = max(MOST_BUILD_MEMORY, session_setting)
    if need > most:
        logger.warning(
            "the HNSW graph of %d vectors needs ~%d MB but the build gets %d MB, so it will "
            "be much slower; raise maintenance_work_mem on the database server to speed it up",
            vectors,
            need // 2**20,
            most // 2**20,
        )
    return max(LEAST_BUILD_MEMORY, min(need, most))


def index_state(name: str) -> bool | None:
    """True: the index exists and is valid; False: a CONCURRENTLY build of it died; None: none."""
    with connection.cursor() as cursor:
        cursor.execute(sql.INDEX_STATE, [name])
        row = cursor.fetchone()
    return None if row is None else row[0]


def _vector_indexes() -> list[tuple[str, str, bool]]:
    """(name, definition, is HNSW) of every index over clips.embedding, valid or not."""
    with connection.cursor() as cursor:
        cursor.execute(sql.VECTOR_INDEXES)
        return cursor.fetchall()


def hnsw_index_exists() -> bool:
    """Some valid HNSW index serves clips.embedding (the tool's, or a site's own by its name)."""
    return any(hnsw and index_state(name) is True for name, _, hnsw in _vector_indexes())


def owe_vector_indexes(*, hnsw_only: bool = False) -> list[str]:
    """Record the indexes over clips.embedding before they are taken down, so
    `build_hnsw_index` brings each back by its own name and definition; their names."""
    owed = [row for row in _vector_indexes() if row[2] or not hnsw_only]
    with connection.cursor() as cursor:
        for row in owed:
            cursor.execute(sql.OWE_INDEX, list(row))
    return [name for name, _, _ in owed]


def owed_index_names() -> list[str]:
    """Indexes over clips.embedding taken down and not yet brought back."""
    with connection.cursor() as cursor:
        cursor.execute(sql.OWED)
        return [name for name, _, _ in cursor.fetchall()]


def drop_hnsw_index() -> None:
    """Take the HNSW index over clips.embedding down, owed back. CONCURRENTLY (outside a
    transaction): waits for the searches using it instead of queueing new ones behind it."""
    how = not connection.in_atomic_block
    with connection.cursor() as cursor:
        for name in owe_vector_indexes(hnsw_only=True):
            cursor.execute(sql.drop_index(name, concurrently=how))


def _as_built(definition: str, storage: str, *, concurrently: bool) -> str:
    """A recorded definition (`pg_get_indexdef`), built CONCURRENTLY if asked, with its
    operator class for the column's present storage (a switch may have changed it)."""
    if concurrently:
        definition = CREATE_INDEX.sub(r"CREATE \1INDEX CONCURRENTLY ", definition, count=1)
    return OPCLASS.sub(rf"{storage}_\2", definition)


def _build(
    name: str,
    create: str,
    vectors_query: str | None,
    params: list,
    vector_type: tuple[str, int],
) -> None:
    """Create an index unless a valid one exists (a half-built one is dropped first); an HNSW
    one with memory for the graph of the vectors `vectors_query` counts."""
    state = index_state(name)
    if state:
        return
    with connection.cursor() as cursor:
        if state is False:
            cursor.execute(sql.drop_index(name))
        if vectors_query is None:
            cursor.execute(create)
            return
        cursor.execute(vectors_query, params)
        (vectors,) = cursor.fetchone()
        cursor.execute(sql.BUILD_SETTINGS)
        session_memory, session_workers = cursor.fetchone()
        memory = build_memory(vectors, *vector_type, session_memory)
        workers = max(1, session_workers)  # a session that allows none is given one
        cursor.execute(sql.MAINTENANCE_SETTINGS, [f"{memory // 1024}kB", str(workers)])
        cursor.execute(create)
        # The session as it was (after a failure it keeps the build's: harmless).
        cursor.execute(
            sql.MAINTENANCE_SETTINGS, [f"{session_memory // 1024}kB", str(session_workers)]
        )


def build_hnsw_index(*, concurrently: bool = False) -> None:
    """Bring back every index over clips.embedding a drop owes (by its own name and
    definition), else make the tool's own HNSW index if none serves the column; and any other
    index of the tool's that a column replacement dropped. CONCURRENTLY: searches and writes
    go on meanwhile (outside a transaction only)."""
    column = embedding_column_type()
    with connection.cursor() as cursor:
        cursor.execute(sql.OWED)
        owed = cursor.fetchall()
    for name, definition, hnsw in owed:
        create = _as_built(definition, column[0], concurrently=concurrently)
        _build(name, create, sql.CLIPS_VECTORS if hnsw else None, [], column)
        with connection.cursor() as cursor:
            cursor.execute(sql.PAID, [name])
    if not hnsw_index_exists():
        create = sql.create_clips_hnsw_index(column[0], concurrently=concurrently)
        _build(sql.HNSW_INDEX_NAME, create, sql.CLIPS_VECTORS, [], column)
    with connection.schema_editor(atomic=False) as editor:
        for index in tool_indexes(connection, Clip):
            create = str(index.create_sql(Clip, editor, concurrently=concurrently))
            _build(index.name, create, None, [], column)


def build_rows_index_name(version_id: int) -> str:
    return sql.HNSW_INDEX_NAME_OF_BUILD.format(version=int(version_id))


def build_rows_index(version_id: int, storage: str, dimensions: int) -> None:
    """The HNSW index a version is searched through while it is served from its build rows."""
    create = sql.create_build_hnsw_index(version_id, storage, dimensions)
    name = build_rows_index_name(version_id)
    _build(name, create, sql.BUILD_VECTORS, [version_id], (storage, dimensions))


def drop_build_rows_index(version_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql.drop_index(build_rows_index_name(version_id)))
