"""The SQL that keeps the coverage counts: a row's bucket, the triggers, the ledger tables.

A clip's bucket is what the coverage page and `/metrics` need to know of it: removed or not,
failed or not, the model and size of its vector, and its `state`, a small number that says
every comparison `embeddings.models` makes of it (vector or none, the vector's text hash
against the present one, blank text, the vector's time against the text's change; see
`STATE_FUNCTION`). Each bucket is counted in three facets: `s` (all clips), `m` (clips with a
vector, by the quarter hour it was made) and `c` (clips by the quarter hour they were created).

Writers never update a shared row: a statement-level AFTER trigger per event (PostgreSQL
allows transition tables only on single-event triggers,
https://www.postgresql.org/docs/current/sql-createtrigger.html) appends the statement's net
per-bucket change to `embedding_coverage_deltas`; readers fold those into
`embedding_coverage_totals` (`embeddings.coverage.ledger`).
"""

from django.db.backends.base.base import BaseDatabaseWrapper

from embeddings.clip_text import BLANK_TEXT_HASH
from embeddings.site_table.catalog import CLIPS, column_type

DELTAS = "embedding_coverage_deltas"
TOTALS = "embedding_coverage_totals"
BASE = "embedding_coverage_base"  # what `clips` looked like when the base was counted
VIEW = "embedding_coverage_buckets"  # totals plus unfolded deltas, as `CoverageBucket` reads them
FUNCTION = "clip_embeddings_count"
STATE_FUNCTION = "clip_embeddings_state"
TRIGGERS = {
    "INSERT": ("clip_embeddings_count_insert", "REFERENCING NEW TABLE AS new_rows"),
    "UPDATE": (
        "clip_embeddings_count_update",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    "DELETE": ("clip_embeddings_count_delete", "REFERENCING OLD TABLE AS old_rows"),
    "TRUNCATE": ("clip_embeddings_count_truncate", ""),
}
KEY = (
    "facet",
    "quarter",
    "is_removed",
    "failed",
    "embedding_model",
    "embedding_dimensions",
    "state",
)
# A delta's key: a clip's bucket with both its quarter hours (the facets come at folding).
CLIP_KEY = (
    "is_removed",
    "failed",
    "embedding_model",
    "embedding_dimensions",
    "state",
    "made",
    "created",
)
QUARTER = "15 minutes"  # every time zone in use is a whole number of quarter hours off UTC
# Canonical values of a bucket's row (see `VIEW`): any two distinct, neither the blank hash.
PRESENT_HASH, OTHER_HASH = "present", "other"
EPOCH = "2000-01-01 00:00:00+00"


# The columns a bucket is made of. DDL changes them without firing a trigger (a switch drops
# and adds `embedding`: every vector NULL at once); their attribute numbers and types tell.
BUCKET_COLUMNS = (
    "is_removed",
    "embedding",
    "embedding_model",
    "embedding_dimensions",
    "embedding_text_hash",
    "text_hash",
    "embedding_generated_at",
    "text_changed_at",
    "embedding_error",
    "created_at",
)
FINGERPRINT_SQL = (
    "SELECT string_agg(concat_ws(':', attname, attnum, atttypid, atttypmod), ','"
    " ORDER BY attname) FROM pg_attribute"
    f" WHERE attrelid = '{CLIPS}'::regclass AND NOT attisdropped"
    f" AND attname IN ({', '.join(map(repr, BUCKET_COLUMNS))})"
)


def _utc(column: str, sql_type: str | None) -> str:
    """A time column as the instant Django reads it: a site's `timestamp without time zone`
    holds UTC (Django's sessions run in UTC; a site's writer's session may not)."""
    return f"({column} AT TIME ZONE 'UTC')" if sql_type == "timestamp without time zone" else column


def state_call(row: str = "", *, vector: bool = True) -> str:
    """The state of a row of `clips` (`row` the alias, with its dot), as the index of pending
    clips, the triggers and the counts all spell it (the index matches the query's text);
    `vector` False: all of it but whether the row holds a vector."""
    has_vector = f"{row}embedding IS NOT NULL" if vector else "false"
    return (
        f"{STATE_FUNCTION}({has_vector}, {row}embedding_text_hash,"
        f" {row}text_hash, {row}embedding_generated_at, {row}text_changed_at)"
    )


def _state_function(connection: BaseDatabaseWrapper) -> str:
    """One immutable SQL function (inlined by the planner), so that the index and the counts
    say the state alike. The digits: vector (1), vector's hash against the text's (x2: none,
    text's unknown, equal, other), text (x8: unknown, blank, some) and vector's time against
    the text's change (x24: none, at or after, before, change unknown)."""
    made = column_type(connection, "embedding_generated_at") or "timestamp with time zone"
    changed = column_type(connection, "text_changed_at") or "timestamp with time zone"
    return f"""CREATE OR REPLACE FUNCTION {STATE_FUNCTION}(has_vector boolean, vector_hash text,
    text_hash text, made {made}, changed {changed}) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT (CASE WHEN has_vector THEN 1 ELSE 0 END
    + 2 * CASE WHEN vector_hash IS NULL THEN 0 WHEN text_hash IS NULL THEN 1
               WHEN vector_hash = text_hash THEN 2 ELSE 3 END
    + 8 * CASE WHEN text_hash IS NULL THEN 0 WHEN text_hash = '{BLANK_TEXT_HASH}' THEN 1
               ELSE 2 END
    + 24 * CASE WHEN made IS NULL THEN 0 WHEN changed IS NULL THEN 3
                WHEN {_utc("made", made)} >= {_utc("changed", changed)} THEN 1 ELSE 2 END
    )::smallint
$$"""


def clip_rows(connection: BaseDatabaseWrapper, sources: list[tuple[int, str]]) -> str:
    """The key (`CLIP_KEY`) of every clip of `sources`, each (sign, relation), with `n` the
    sign: what a trigger appends, summed, and what a count of `clips` starts from."""
    made = _utc("c.embedding_generated_at", column_type(connection, "embedding_generated_at"))
    created = _utc("c.created_at", column_type(connection, "created_at"))
    return " UNION ALL ".join(
        f"SELECT c.is_removed, c.embedding_error IS NOT NULL AS failed,"
        f" c.embedding_model::text AS embedding_model, c.embedding_dimensions,"
        f" {state_call('c.')} AS state,"
        f" date_bin('{QUARTER}', {made}, '{EPOCH}') AS made,"
        f" date_bin('{QUARTER}', {created}, '{EPOCH}') AS created, {sign:d} AS n"
        f" FROM {relation} AS c"
        for sign, relation in sources
    )


def facets(rows: str) -> str:
    """`rows` of clips' keys and `n` as the three facets' buckets (`KEY` and `n`)."""
    return f"""SELECT f.*, r.n FROM ({rows}) AS r CROSS JOIN LATERAL (VALUES
    ('s', NULL::timestamptz, r.is_removed, r.failed, r.embedding_model,
     r.embedding_dimensions, r.state),
    ('m', r.made, r.is_removed, r.failed, r.embedding_model, r.embedding_dimensions, r.state),
    ('c', r.created, r.is_removed, NULL, NULL, NULL, NULL)
) AS f({", ".join(KEY)})
WHERE f.facet <> 'm' OR f.quarter IS NOT NULL"""


def summed(rows: str, key: tuple[str, ...] = KEY) -> str:
    """`rows` (`key` columns and `n`) summed by key, empty ones left out."""
    columns = ", ".join(key)
    return (
        f"SELECT {columns}, sum(n)::bigint AS n FROM ({rows}) AS rows"
        f" GROUP BY {columns} HAVING sum(n) <> 0"
    )


def unfolded(relation: str = DELTAS, sign: int = 1) -> str:
    """Deltas as facet buckets: a clip's key (no facet) spread over the facets; a TRUNCATE's
    (a facet, its quarter in `made`) as it is."""
    keys = ", ".join(CLIP_KEY)
    return (
        f"{facets(f'SELECT {keys}, {sign:d} * n AS n FROM {relation} WHERE facet IS NULL')}"
        f" UNION ALL SELECT facet, made, is_removed, failed, embedding_model,"
        f" embedding_dimensions, state, {sign:d} * n FROM {relation} WHERE facet IS NOT NULL"
    )


def ledger_rows(sign: int = 1) -> str:
    """The counts as kept: the folded totals and the deltas not folded yet."""
    return (
        f"SELECT {', '.join(KEY)}, {sign:d} * n AS n FROM {TOTALS} UNION ALL {unfolded(sign=sign)}"
    )


def _count_function(connection: BaseDatabaseWrapper) -> str:
    """The trigger function: one delta row per distinct clip key of the statement (spread
    over the facets when folded, off the writer's path). SECURITY DEFINER: the site's
    writers need no right on the tool's tables
    (https://www.postgresql.org/docs/current/sql-createfunction.html, "Writing SECURITY
    DEFINER Functions Safely": hence the fixed search_path). A TRUNCATE, which has no
    transition table, appends the opposite of every count; run under READ COMMITTED (as
    every client runs it), its statement sees every committed delta."""

    def append(sources: list[tuple[int, str]]) -> str:
        columns = ", ".join((*CLIP_KEY, "n"))
        rows = summed(clip_rows(connection, sources), CLIP_KEY)
        return f"INSERT INTO {DELTAS} ({columns}) {rows};"

    return f"""CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {append([(1, "new_rows")])}
    ELSIF TG_OP = 'UPDATE' THEN
        {append([(1, "new_rows"), (-1, "old_rows")])}
    ELSIF TG_OP = 'DELETE' THEN
        {append([(-1, "old_rows")])}
    ELSE
        INSERT INTO {DELTAS} (facet, made, is_removed, failed, embedding_model,
            embedding_dimensions, state, n) {summed(ledger_rows(-1))};
    END IF;
    RETURN NULL;
END $$"""


def _tables() -> list[str]:
    bucket = """is_removed boolean, failed boolean, embedding_model text,
    embedding_dimensions integer, state smallint"""
    key = ", ".join(KEY)
    canonical = f"""CASE state / 8 % 3 WHEN 0 THEN NULL WHEN 1 THEN '{BLANK_TEXT_HASH}'
        ELSE '{PRESENT_HASH}' END"""
    return [
        # Append-only: no index, no row any two writers share.
        f"""CREATE TABLE IF NOT EXISTS {DELTAS} (facet text, {bucket},
    made timestamptz, created timestamptz, n bigint NOT NULL)""",
        f"CREATE TABLE IF NOT EXISTS {BASE} (fingerprint text NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {TOTALS} (facet text NOT NULL, quarter timestamptz,
    {bucket}, n bigint NOT NULL,
    CONSTRAINT {TOTALS}_bucket UNIQUE NULLS NOT DISTINCT ({key}))""",
        # A row standing for each bucket, made of canonical values that answer every
        # comparison `embeddings.models` makes as the bucket's clips do: the page counts it
        # through the same Q expressions as the full scan.
        f"""CREATE OR REPLACE VIEW {VIEW} AS SELECT
    b.*,
    CASE WHEN state % 2 = 1 THEN true END AS embedding,
    {canonical} AS text_hash,
    CASE state / 2 % 4 WHEN 0 THEN NULL WHEN 2 THEN {canonical}
        ELSE '{OTHER_HASH}' END AS embedding_text_hash,
    CASE state / 24 WHEN 0 THEN NULL WHEN 2 THEN timestamptz '{EPOCH}' - interval '1 second'
        ELSE timestamptz '{EPOCH}' END AS embedding_generated_at,
    CASE WHEN state / 24 <> 3 THEN timestamptz '{EPOCH}' END AS text_changed_at,
    CASE WHEN failed THEN 'failed' END AS embedding_error
FROM ({summed(ledger_rows())}) AS b""",
    ]


def install_sql(connection: BaseDatabaseWrapper) -> list[str]:
    """The ledger's tables and functions: no lock on `clips`."""
    return [*_tables(), _state_function(connection), _count_function(connection)]


def triggers_sql() -> str:
    """The four triggers, as one statement (one brief lock on `clips`, all or none).
    CREATE OR REPLACE TRIGGER: a migrate run again after an interruption redoes them."""
    return "; ".join(
        f"CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {CLIPS} {transition}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        for event, (name, transition) in TRIGGERS.items()
    )


def drop_triggers_sql() -> str:
    return "; ".join(f"DROP TRIGGER IF EXISTS {name} ON {CLIPS}" for name, _ in TRIGGERS.values())


def drop_sql() -> list[str]:
    """What `install_sql` made (after the triggers and the index that use it are gone)."""
    return [
        f"DROP VIEW IF EXISTS {VIEW}",
        f"DROP TABLE IF EXISTS {TOTALS}, {DELTAS}, {BASE}",
        f"DROP FUNCTION IF EXISTS {FUNCTION}()",
        f"DROP FUNCTION IF EXISTS {STATE_FUNCTION}",
    ]


# The model and size as the pending index holds them: never NULL, so that a probe names each
# with `=`, which lets PostgreSQL walk the index in `text_changed_at` order (an IS NULL test
# does not); the exact test is made on the row besides.
PROBED: dict[str, str | int] = {"embedding_model": "", "embedding_dimensions": 0}


def probed(column: str) -> str:
    return f"coalesce({column}, {PROBED[column]!r})"  # '' or 0: SQL literals as repr() spells them


# `text_changed_at >= '-infinity'` (true of every time; no query but the probe says it, and
# `min()` ignores the NULLs it leaves out) keeps the planner from taking this index for search:
# covering every live clip, it was chosen, with a sort, over the HNSW index for a vector query
# on a small table. (`IS NOT NULL` would not do: PostgreSQL drops it on a NOT NULL column.)
PENDING_INDEX_PREDICATE = "is_removed = false AND text_changed_at >= '-infinity'"


def pending_index_sql(name: str) -> str:
    """The index that finds the clip waiting longest in each pending bucket at once: its
    leading columns are the bucket, its last the time the clip's text changed. The vector
    itself is left out of it (a probe tests it on the row), so that the index outlives a
    switch's new `embedding` column."""
    leading = ", ".join(
        f"({expression})" for expression in (*map(probed, PROBED), state_call(vector=False))
    )
    return (
        f"CREATE INDEX CONCURRENTLY {name} ON {CLIPS} ({leading}, text_changed_at)"
        f" WHERE {PENDING_INDEX_PREDICATE}"
    )
