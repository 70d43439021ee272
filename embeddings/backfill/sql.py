"""Every SQL statement of the backfill, written once, table names taken from the models.

Composed with `psycopg.sql` (identifiers quoted by psycopg, never pasted in by f-strings) and
rendered to plain strings once, so Django cursors and raw psycopg cursors both take them.
"""

from psycopg import sql

from embeddings.models import BackfillRun, Clip, ClipVector, EmbeddingClaim

LOCK_NAMESPACE = 0x636C6970  # "clip": the first key of every run's advisory lock
BATCH_LOCK_NAMESPACE = 0x62617463  # "batc": the Batch API's one ticker
FINISH_LOCK_NAMESPACE = 0x66696E69  # "fini": runs finish one at a time

CLIPS = sql.Identifier(Clip._meta.db_table)
CLAIMS = sql.Identifier(EmbeddingClaim._meta.db_table)
RUNS = sql.Identifier(BackfillRun._meta.db_table)
BUILDS = sql.Identifier(ClipVector._meta.db_table)
STAGING = sql.Identifier("embedding_writes")  # a temp table per session
KEY_TYPES = {"bigint": "bigint", "integer": "integer", "uuid": "uuid"}  # clips.id, as SQL
HNSW_INDEX_NAME = "clips_embedding_hnsw"


def _render(template: str, **parts: sql.Composable) -> str:
    return sql.SQL(template).format(**parts).as_string()


# Run ids whose advisory lock is held now: those runs are alive, their claims count.
LIVE_RUNS = _render(
    """SELECT objid::bigint FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {namespace} AND objsubid = 2 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
    namespace=sql.Literal(LOCK_NAMESPACE),
)
NEXT_RUN_ID = _render(
    "SELECT nextval(pg_get_serial_sequence({table}, 'id'))",
    table=sql.Literal(BackfillRun._meta.db_table),
)
TAKE_LEASE = "SELECT pg_advisory_lock(%s, %s)"
BATCH_TICK_LOCK = _render(
    "SELECT pg_try_advisory_lock({namespace}, 0)", namespace=sql.Literal(BATCH_LOCK_NAMESPACE)
)
BATCH_TICK_UNLOCK = _render(
    "SELECT pg_advisory_unlock({namespace}, 0)", namespace=sql.Literal(BATCH_LOCK_NAMESPACE)
)
TAKE_LEASE_ARGS = (LOCK_NAMESPACE,)

# A run still `running` whose lock is gone died (kill -9, a lost machine): its counts so far
# were saved as it went; it ended at its last save.
SETTLE_DEAD_RUNS = _render(
    """UPDATE {runs} SET
        status = 'interrupted',
        finished_at = coalesce(updated_at, started_at),
        duration_seconds = extract(epoch FROM coalesce(updated_at, started_at) - started_at),
        error = %s
    WHERE status = 'running' AND id NOT IN ({live})""",
    runs=RUNS,
    live=sql.SQL(LIVE_RUNS),
)
CLEAR_DEAD_CLAIMS = _render(
    "DELETE FROM {claims} WHERE run_id NOT IN ({live})", claims=CLAIMS, live=sql.SQL(LIVE_RUNS)
)
RELEASE_RUN_CLAIMS = _render("DELETE FROM {claims} WHERE run_id = %s", claims=CLAIMS)
RELEASE_CLAIMS = _render(
    "DELETE FROM {claims} WHERE run_id = %s AND clip_id = ANY(%s)", claims=CLAIMS
)
# Candidates come in a CTE named `candidates`; a claim held by a dead run is taken over.
CLAIM_CANDIDATES = _render(
    """INSERT INTO {claims} (clip_id, target, run_id, claimed_at)
    SELECT id, %s, %s, now() FROM candidates
    ON CONFLICT (clip_id, target) DO UPDATE
        SET run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at
        WHERE {claims}.run_id NOT IN ({live})
    RETURNING clip_id""",
    claims=CLAIMS,
    live=sql.SQL(LIVE_RUNS),
)


def create_staging(key_type: str) -> str:
    """The session's staging table, its `id` of the clips' key type (bigint, uuid)."""
    return _render(
        "CREATE TEMP TABLE IF NOT EXISTS {staging} "
        "(id {key}, embedding vector, text_hash text) ON COMMIT DELETE ROWS",
        staging=STAGING,
        key=sql.SQL(KEY_TYPES[key_type]),
    )


COPY_TO_STAGING = _render(
    "COPY {staging} (id, embedding, text_hash) FROM STDIN WITH (FORMAT BINARY)", staging=STAGING
)
# A temp table has no statistics: without them the join below scans all of clips.
ANALYZE_STAGING = _render("ANALYZE {staging}", staging=STAGING)
# Only where the text still hashes to what was embedded: an edit in flight keeps its new text.
# A NULL text_hash is a site's row untouched since the table was taken in (its trigger fills
# the hash on any write, an edit included), so its text is still the one claimed.
WRITE_FROM_STAGING = _render(
    """UPDATE {clips} SET
        embedding = w.embedding,
        embedding_model = %s,
        embedding_dimensions = %s,
        embedding_text_hash = w.text_hash,
        embedding_generated_at = now(),
        embedding_error = NULL,
        embedding_attempts = 0,
        embedding_failed_at = NULL
    FROM {staging} w
    WHERE {clips}.id = w.id AND coalesce({clips}.text_hash, w.text_hash) = w.text_hash
    RETURNING {clips}.id""",
    clips=CLIPS,
    staging=STAGING,
)


def unnest_keys(key_type: str) -> str:
    """One array parameter of clip keys as rows (one parameter, not one per id)."""
    return _render("SELECT unnest(%s::{key}[])", key=sql.SQL(KEY_TYPES[key_type]))


def record_failures(key_type: str) -> str:
    return _render(
        """UPDATE {clips} SET
            embedding_error = f.reason,
            embedding_attempts = embedding_attempts + 1,
            embedding_failed_at = now()
        FROM unnest(%s::{key}[], %s::text[]) AS f(id, reason)
        WHERE {clips}.id = f.id""",
        clips=CLIPS,
        key=sql.SQL(KEY_TYPES[key_type]),
    )


# A version being built: rows land beside the clips, never touching `clips` or its index;
# only where the clip's text still hashes to what was embedded.
WRITE_BUILD_FROM_STAGING = _render(
    """INSERT INTO {builds} (version_id, clip_id, embedding, text_hash, generated_at)
    SELECT %s, w.id, w.embedding, w.text_hash, now()
    FROM {staging} w JOIN {clips} c
        ON c.id = w.id AND coalesce(c.text_hash, w.text_hash) = w.text_hash
    ON CONFLICT (version_id, clip_id) DO UPDATE SET
        embedding = EXCLUDED.embedding,
        text_hash = EXCLUDED.text_hash,
        generated_at = EXCLUDED.generated_at
    RETURNING clip_id""",
    builds=BUILDS,
    staging=STAGING,
    clips=CLIPS,
)
# The version's current vectors that clips already hold (a large run of the served version,
# or a change of storage alone): one statement instead of API calls.
SEED_BUILD_ROWS = _render(
    """INSERT INTO {builds} (version_id, clip_id, embedding, text_hash, generated_at)
    SELECT %s, id, embedding::vector, embedding_text_hash, embedding_generated_at FROM {clips}
    WHERE NOT is_removed AND embedding IS NOT NULL AND embedding_model = %s
      AND embedding_dimensions = %s AND embedding_text_hash = text_hash
    ON CONFLICT (version_id, clip_id) DO NOTHING""",
    builds=BUILDS,
    clips=CLIPS,
)
DELETE_BUILD_ROWS = _render("DELETE FROM {builds} WHERE version_id = %s", builds=BUILDS)
# The last clip key of the next chunk of a version's build rows after a key (NULL: from the
# first); NULL when fewer rows are left than a chunk. Keys may be uuids: no arithmetic on them.
NEXT_BUILD_CHUNK_END = _render(
    """SELECT clip_id FROM {builds} WHERE version_id = %s AND (clip_id > %s) IS NOT FALSE
    ORDER BY clip_id OFFSET %s LIMIT 1""",
    builds=BUILDS,
)

# Indexes over clips.embedding (its HNSW index, partial indexes naming it), whoever made them,
# as PostgreSQL records their dependence on the column.
VECTOR_INDEXES = _render(
    """SELECT c.relname, pg_get_indexdef(c.oid), am.amname = 'hnsw'
    FROM pg_depend d
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    JOIN pg_class c ON c.oid = d.objid
    JOIN pg_am am ON am.oid = c.relam
    WHERE d.classid = 'pg_class'::regclass AND d.refobjid = to_regclass({clips})
      AND a.attname = 'embedding' AND c.relkind = 'i'
    ORDER BY c.relname""",
    clips=sql.Literal(Clip._meta.db_table),
)
# What a drop owes back: an index over the vectors taken down (rebuild mode, a column replaced)
# is recorded first, so it returns by its own name and definition even after a kill -9.
OWED_INDEXES = sql.Identifier("embedding_owed_indexes")
OWE_INDEX = _render(
    "INSERT INTO {owed} (name, definition, hnsw) VALUES (%s, %s, %s)"
    " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, hnsw = EXCLUDED.hnsw",
    owed=OWED_INDEXES,
)
OWED = _render("SELECT name, definition, hnsw FROM {owed} ORDER BY name", owed=OWED_INDEXES)
PAID = _render("DELETE FROM {owed} WHERE name = %s", owed=OWED_INDEXES)
# No row: no such index; false: a CONCURRENTLY build of it died half-way.
INDEX_STATE = "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)"
HNSW_INDEX_NAME_OF_BUILD = "clip_vector_builds_{version}_hnsw"
CLIPS_VECTORS = _render("SELECT count(*) FROM {clips} WHERE embedding IS NOT NULL", clips=CLIPS)
BUILD_VECTORS = _render("SELECT count(*) FROM {builds} WHERE version_id = %s", builds=BUILDS)
# The session's build settings (the server's, unless the connection or its caller set them):
# maintenance_work_mem in bytes, max_parallel_maintenance_workers.
BUILD_SETTINGS = (
    "SELECT pg_size_bytes(current_setting('maintenance_work_mem')),"
    " current_setting('max_parallel_maintenance_workers')::int"
)
MAINTENANCE_SETTINGS = (
    "SELECT set_config('maintenance_work_mem', %s, false),"
    " set_config('max_parallel_maintenance_workers', %s, false)"
)


def drop_index(name: str, *, concurrently: bool = False) -> str:
    return _render(
        "DROP INDEX {how} IF EXISTS {index}",
        how=sql.SQL("CONCURRENTLY" if concurrently else ""),
        index=sql.Identifier(name),
    )


def _vector_type(storage: str, dimensions: int) -> sql.Composable:
    return sql.SQL("{storage}({size})").format(
        storage=sql.SQL({"vector": "vector", "halfvec": "halfvec"}[storage]),
        size=sql.Literal(int(dimensions)),
    )


def _opclass(storage: str) -> sql.Composable:
    return sql.SQL({"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}[storage])


def create_clips_hnsw_index(storage: str, *, concurrently: bool) -> str:
    """The clips column's HNSW index for cosine distance, as the model names it."""
    return _render(
        "CREATE INDEX {how} {index} ON {clips} USING hnsw (embedding {ops})"
        " WITH (m = 16, ef_construction = 64)",
        how=sql.SQL("CONCURRENTLY" if concurrently else ""),
        index=sql.Identifier(HNSW_INDEX_NAME),
        clips=CLIPS,
        ops=_opclass(storage),
    )


def create_build_hnsw_index(version_id: int, storage: str, dimensions: int) -> str:
    """An HNSW index over one version's build rows: an expression (the untyped column cast to
    the version's type) and a predicate, which searches of that version repeat."""
    return _render(
        "CREATE INDEX CONCURRENTLY {index} ON {builds} USING hnsw"
        " ((embedding::{type}) {ops}) WITH (m = 16, ef_construction = 64)"
        " WHERE version_id = {version}",
        index=sql.Identifier(HNSW_INDEX_NAME_OF_BUILD.format(version=int(version_id))),
        builds=BUILDS,
        type=_vector_type(storage, dimensions),
        ops=_opclass(storage),
        version=sql.Literal(int(version_id)),
    )


def replace_vector_column(storage: str, dimensions: int) -> str:
    """A new empty `clips.embedding` of the version's type: catalog-only (ALTER TYPE would
    rewrite the table under an exclusive lock). Drops every index on the column with it."""
    return _render(
        "ALTER TABLE {clips} DROP COLUMN embedding, ADD COLUMN embedding {type}",
        clips=CLIPS,
        type=_vector_type(storage, dimensions),
    )


def copy_from_builds(storage: str, dimensions: int) -> str:
    """A version's build rows into `clips` for ids in (%s, %s] (a NULL bound: open), where
    clips lacks that very row (re-running copies nothing twice; a build row written since is
    copied again)."""
    return _render(
        """UPDATE {clips} c SET
            embedding = b.embedding::{type},
            embedding_model = %s,
            embedding_dimensions = %s,
            embedding_text_hash = b.text_hash,
            embedding_generated_at = b.generated_at,
            embedding_error = NULL,
            embedding_attempts = 0,
            embedding_failed_at = NULL
        FROM {builds} b
        WHERE b.version_id = %s AND b.clip_id = c.id
          AND (c.id > %s) IS NOT FALSE AND (c.id <= %s) IS NOT FALSE
          AND (c.embedding IS NULL OR c.embedding_generated_at IS DISTINCT FROM b.generated_at
               OR c.embedding_text_hash IS DISTINCT FROM b.text_hash)""",
        clips=CLIPS,
        builds=BUILDS,
        type=_vector_type(storage, dimensions),
    )
