"""Every SQL statement of the backfill, written once, table names taken from the models.

Composed with `psycopg.sql` (identifiers quoted by psycopg, never pasted in by f-strings) and
rendered to plain strings once, so Django cursors and raw psycopg cursors both take them.
"""

from psycopg import sql

from embeddings.models import BackfillRun, Clip, EmbeddingClaim

LOCK_NAMESPACE = 0x636C6970  # "clip": the first key of every run's advisory lock
BATCH_LOCK_NAMESPACE = 0x62617463  # "batc": the Batch API's one ticker

CLIPS = sql.Identifier(Clip._meta.db_table)
CLAIMS = sql.Identifier(EmbeddingClaim._meta.db_table)
RUNS = sql.Identifier(BackfillRun._meta.db_table)
STAGING = sql.Identifier("embedding_writes")  # a temp table per session
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
    """INSERT INTO {claims} (clip_id, run_id, claimed_at)
    SELECT id, %s, now() FROM candidates
    ON CONFLICT (clip_id) DO UPDATE
        SET run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at
        WHERE {claims}.run_id NOT IN ({live})
    RETURNING clip_id""",
    claims=CLAIMS,
    live=sql.SQL(LIVE_RUNS),
)

CREATE_STAGING = _render(
    "CREATE TEMP TABLE IF NOT EXISTS {staging} "
    "(id bigint, embedding vector, text_hash text) ON COMMIT DELETE ROWS",
    staging=STAGING,
)
COPY_TO_STAGING = _render(
    "COPY {staging} (id, embedding, text_hash) FROM STDIN WITH (FORMAT BINARY)", staging=STAGING
)
# A temp table has no statistics: without them the join below scans all of clips.
ANALYZE_STAGING = _render("ANALYZE {staging}", staging=STAGING)
# Only where the text still hashes to what was embedded: an edit in flight keeps its new text.
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
    WHERE {clips}.id = w.id AND {clips}.text_hash = w.text_hash
    RETURNING {clips}.id""",
    clips=CLIPS,
    staging=STAGING,
)
RECORD_FAILURES = _render(
    """UPDATE {clips} SET
        embedding_error = f.reason,
        embedding_attempts = embedding_attempts + 1,
        embedding_failed_at = now()
    FROM unnest(%s::bigint[], %s::text[]) AS f(id, reason)
    WHERE {clips}.id = f.id""",
    clips=CLIPS,
)

VECTOR_COLUMN_SIZE = (
    "SELECT atttypmod FROM pg_attribute "
    "WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped"
)
INDEX_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
DROP_HNSW_INDEX = _render("DROP INDEX IF EXISTS {index}", index=sql.Identifier(HNSW_INDEX_NAME))
CLEAR_PROVENANCE = _render(
    "UPDATE {clips} SET embedding_model = NULL, embedding_dimensions = NULL, "
    "embedding_text_hash = NULL, embedding_generated_at = NULL "
    "WHERE embedding_model IS NOT NULL OR embedding_text_hash IS NOT NULL",
    clips=CLIPS,
)


def resize_vector_column(dimensions: int) -> str:
    """ALTER the column to `vector(dimensions)`, clearing it (old vectors cannot convert)."""
    return _render(
        "ALTER TABLE {clips} ALTER COLUMN embedding TYPE vector({size}) USING NULL",
        clips=CLIPS,
        size=sql.Literal(int(dimensions)),
    )
