"""Writing vectors back: binary COPY into a temp table, then one UPDATE ... FROM.

Django's VectorField sends vectors as text, which dominates write cost; COPY in binary
through the raw psycopg connection with pgvector's adapters was measured ~20x faster than
`UPDATE ... FROM unnest()` here. A row is written only if its text still hashes to what was
embedded, so a title edited while its batch was in flight never gets the old title's vector.
"""

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from pgvector.psycopg import register_vector

from embeddings.backfill import sql
from embeddings.backfill.claims import release

# Keyed by the connection object itself: an id() is reused once a closed connection is freed.
_REGISTERED: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class EmbeddedClip:
    id: int
    text_hash: str
    vector: np.ndarray


def _raw_connection():
    """The psycopg connection with pgvector's adapters and the session's staging table.

    The table is created (if missing) inside every write's transaction: a rolled-back
    transaction takes a table it created with it, so remembering "created" would be wrong.
    """
    connection.ensure_connection()
    raw = connection.connection
    if raw not in _REGISTERED:
        register_vector(raw)
        _REGISTERED.add(raw)
    with raw.cursor() as cur:
        cur.execute(sql.CREATE_STAGING)
    return raw


def write_embeddings(
    clips: Sequence[EmbeddedClip],
    *,
    model: str,
    dimensions: int,
    run_id: int | None,
    version_id: int | None = None,
) -> set[int]:
    """Store vectors and provenance (in `clips`, or as build rows of `version_id`), free the
    clips' claims; return the ids written."""
    if not clips:
        return set()
    with transaction.atomic():
        raw = _raw_connection()
        with raw.cursor() as cur:
            with cur.copy(sql.COPY_TO_STAGING) as copy:
                copy.set_types(["int8", "vector", "text"])
                for clip in clips:
                    copy.write_row((clip.id, clip.vector, clip.text_hash))
            cur.execute(sql.ANALYZE_STAGING)
            if version_id is None:
                cur.execute(sql.WRITE_FROM_STAGING, (model, dimensions))
            else:
                cur.execute(sql.WRITE_BUILD_FROM_STAGING, (version_id,))
            written = {row[0] for row in cur.fetchall()}
            release([clip.id for clip in clips], run_id, cursor=cur)
    return written


def record_failures(failures: dict[int, str], *, run_id: int | None) -> None:
    """Keep why each clip failed, and free it: later runs select it again."""
    if not failures:
        return
    ids = list(failures)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql.RECORD_FAILURES, [ids, [failures[i][:1000] for i in ids]])
        release(ids, run_id, cursor=cur)
