"""The text and hybrid search statements, composed with `psycopg.sql`.

Django compiles what depends on the queryset it is given (its filters, "live", the vector
side's "current"); each such fragment has its values bound into it at once (`bound`), and the
statement places fragments and its own values by name. So no list of parameters has to follow
the order in which Django's compiler happens to emit them.

The text side, one pass over the matching rows. Its document (the coalesce over the stored
`tsvector`, see `hybrid.stored_document`) is read once per row, and the ranking runs on the
matched rows themselves, not on the clips joined back. It ranks the first CAP matches in the
table's page order, as the GIN bitmap scan yields them. At 1,000,000 demo clips a game's name
is in 30,000 to 120,000 clips, and building that bitmap took 50-100 ms, nearly all of the
search; the first 100 of those lie within the first 1,000-3,400 rows. So a sample of the first
SAMPLE_PAGES pages decides: where the words are common (one row in COMMON or more), the first
SCAN_PAGES pages are read in order (a TID range scan) and the bitmap covers only the pages
after them, if it is needed at all; else the bitmap covers the whole table. Both ways yield the
same rows in the same order (a bitmap heap scan also reads its pages in order), so the choice
costs time, never results. https://www.postgresql.org/docs/current/indexes-bitmap-scans.html
"""

from dataclasses import dataclass

import psycopg
from django.db import connections
from django.db.models import QuerySet, TextField
from django.db.models.expressions import RawSQL
from psycopg import sql

SAMPLE_PAGES = 50  # 500 rows of demo clips: 0.5 ms to read where the words are rare
COMMON = 50  # in one row of every COMMON sampled (2%) or more, reading in order beats the bitmap
SCAN_PAGES = 2000  # at most ~20,000 rows read in order, however the sample misled


def bound(queryset: QuerySet) -> sql.Composable:
    """The queryset's SQL with its values bound in, as psycopg's client-side binding (Django's
    default) would send them: a self-contained fragment to place by name."""
    query, params = queryset.query.sql_with_params()
    connection = connections[queryset.db]
    connection.ensure_connection()
    return sql.SQL(psycopg.ClientCursor(connection.connection).mogrify(query, params))


@dataclass(frozen=True)
class TextSide:
    """What the text side matches and ranks by, as SQL: `tsquery` (matches), `every_word`
    (the `complete` tier), `broadcaster` and `creator` (the `named` tier, None: no handle)."""

    tsquery: sql.Composable
    every_word: sql.Composable
    broadcaster: sql.Composable | None
    creator: sql.Composable | None


# {rows}: the candidate rows (id, doc, row_ctid). `sample` is MATERIALIZED, so read once.
TEXT_SIDE = sql.SQL("""
rows AS NOT MATERIALIZED ({rows}),
sample AS MATERIALIZED (
    SELECT count(*) FILTER (WHERE doc @@ {tsquery}) * {common} >= count(*) AS common
    FROM rows WHERE row_ctid < {sample_end}
),
found AS (
    SELECT id, doc FROM (
        (SELECT id, doc
         FROM (SELECT id, doc FROM rows WHERE row_ctid < {scan_end} OFFSET 0) AS in_order
         WHERE (SELECT common FROM sample) AND doc @@ {tsquery})
        UNION ALL
        (SELECT id, doc FROM rows
         WHERE row_ctid >= (SELECT CASE WHEN common THEN {scan_end} ELSE '(0,0)'::tid END
                            FROM sample)
           AND doc @@ {tsquery})
    ) AS first_matches
    LIMIT {cap}
),
matched AS (
    SELECT id, named, complete,
           row_number() OVER (ORDER BY named DESC, complete DESC, text_rank DESC, id) AS rank
    FROM (SELECT id, {named} AS named,
                 CASE WHEN doc @@ {every_word} THEN 1 ELSE 0 END AS complete,
                 ts_rank(doc, {tsquery}) AS text_rank
          FROM found) AS scored
)""")
# The OFFSET 0 keeps `doc @@ ...` out of the in-order subquery: there it would bring the GIN
# index back. https://www.postgresql.org/docs/current/queries-limit.html


def text_side_sql(
    rows: QuerySet, side: TextSide, cap: int, broadcaster_named: int, creator_named: int
) -> sql.Composed:
    """The CTEs `rows`, `sample`, `found` and `matched` (id, named, complete, rank): the first
    `cap` matches ranked. `rows` must select `id`, `doc` and `row_ctid` (`with_location`)."""
    if side.broadcaster is None or side.creator is None:
        named: sql.Composable = sql.Literal(0)
    else:
        named = sql.SQL("CASE WHEN doc @@ {} THEN {} WHEN doc @@ {} THEN {} ELSE 0 END").format(
            side.broadcaster,
            sql.Literal(broadcaster_named),
            side.creator,
            sql.Literal(creator_named),
        )
    return TEXT_SIDE.format(
        rows=bound(rows),
        tsquery=side.tsquery,
        every_word=side.every_word,
        named=named,
        common=sql.Literal(COMMON),
        sample_end=_page(SAMPLE_PAGES),
        scan_end=_page(SCAN_PAGES),
        cap=sql.Literal(cap),
    )


def with_location(queryset: QuerySet) -> QuerySet:
    """The queryset annotated with `row_ctid`, each row's place in the table, so that a
    condition on it lets the planner read pages in order (`enable_seqscan` is off)."""
    table = connections[queryset.db].ops.quote_name(queryset.model._meta.db_table)
    return queryset.annotate(row_ctid=RawSQL(f"{table}.ctid", (), output_field=TextField()))


def _page(number: int) -> sql.Composable:
    return sql.SQL("{}::tid").format(sql.Literal(f"({number},0)"))


def columns_sql(queryset: QuerySet, deferred: tuple[str, ...]) -> tuple[list[str], sql.Composed]:
    """The attnames of the clip's columns but `deferred`, and them as `table.column` SQL."""
    meta = queryset.model._meta
    fields = [field for field in meta.concrete_fields if field.name not in deferred]
    table = sql.Identifier(meta.db_table)
    return [field.attname for field in fields], sql.SQL(", ").join(
        sql.SQL("{}.{}").format(table, sql.Identifier(field.column)) for field in fields
    )


# Only the best k are joined back to the clips: every row read there is a heap page.
TEXT_ONLY = sql.SQL("""
WITH {text_side}
SELECT {columns}, NULL::float8 AS distance
FROM matched JOIN {table} ON {table}.{pk} = matched.id
WHERE matched.rank <= {k}
ORDER BY matched.rank
""")

# The vector side's own SQL has its ORDER BY and LIMIT inside; it is numbered again here
# because the HNSW iterative scan may yield rows slightly out of order. Equal scores (text rank
# r against vector rank r) go to the text side: its words are evidence.
FUSED = sql.SQL("""
WITH nearest AS ({nearest}),
{text_side},
fused AS (
    SELECT coalesce(v.id, t.id) AS id, v.distance,
           t.rank AS text_position,
           coalesce(t.named, 0) * {named_tier} + coalesce(t.complete, 0) * {complete_tier}
           + coalesce(1.0::float8 / ({rrf_k} + v.rank), 0)
           + coalesce(1.0::float8 / ({rrf_k} + t.rank), 0) AS score
    FROM (SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank
          FROM nearest) AS v
    FULL OUTER JOIN (SELECT * FROM matched WHERE rank <= {n}) AS t
    ON t.id = v.id
),
best AS (
    SELECT * FROM fused
    ORDER BY score DESC, text_position NULLS LAST, id
    LIMIT {k}
)
SELECT {columns}, best.distance, best.score
FROM best JOIN {table} ON {table}.{pk} = best.id
ORDER BY best.score DESC, best.text_position NULLS LAST, best.id
""")
