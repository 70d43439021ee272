"""Writing vectors back: binary COPY into a temp table, then one UPDATE ... FROM.

Django's VectorField sends vectors as text, which dominates write cost; COPY in binary
through the raw psycopg connection was measured ~20x faster than `UPDATE ... FROM unnest()`
here. The COPY's rows are built as numpy record arrays (`copy_rows`), a slice at a time, and
sent from their memory as they are: psycopg's `write_row` with pgvector's dumper, row by row,
was 10% of a backfill's CPU samples, and a request's rows whole are ~6 MB per writer. A row
is written only if its text still hashes to what was embedded, so a title edited while its
batch was in flight never gets the old title's vector.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction

from embeddings.backfill import sql
from embeddings.backfill.claims import release
from embeddings.site_table.record import clip_key_type


@dataclass(frozen=True)
class EmbeddedClip:
    id: int | uuid.UUID
    text_hash: str
    vector: np.ndarray


# PostgreSQL's binary COPY framing: signature, flags, header extension; the end marker.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
# Rows built and sent at once: a request's 2,048 rows whole were a 6 MB array per writer,
# alive beside the embedders' buffers (the peaks a long run's RSS grew by).
COPY_SLICE = 256


# The key's binary form: (numpy type, size, the value for it). uuid: its 16 bytes.
KEY_FORMATS = {
    "bigint": (">i8", 8, int),
    "integer": (">i4", 4, int),
    "uuid": ("S16", 16, lambda key: key.bytes),
}


def copy_rows(clips: Sequence[EmbeddedClip], key_type: str = "bigint") -> np.ndarray:
    """The binary COPY rows of (id, embedding vector, text_hash text), to go between
    COPY_SIGNATURE and COPY_TRAILER: per row the field count, then each field's length and
    big-endian value (a vector: its size, a reserved int16, the floats)."""
    key_dtype, key_size, key_value = KEY_FORMATS[key_type]
    dimensions = len(clips[0].vector)
    width = len(clips[0].text_hash)
    if any(len(clip.text_hash) != width for clip in clips):
        raise ValueError("text hashes of one write must have one length (md5 hex)")
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_size", ">i4"),
            ("id", key_dtype),
            ("vector_size", ">i4"),
            ("dimensions", ">i2"),
            ("reserved", ">i2"),
            ("vector", ">f4", (dimensions,)),
            ("hash_size", ">i4"),
            ("hash", f"S{width}"),
        ]
    )
    rows = np.zeros(len(clips), dtype=row)
    rows["fields"] = 3
    rows["id_size"] = key_size
    rows["id"] = [key_value(clip.id) for clip in clips]
    rows["vector_size"] = 4 + 4 * dimensions
    rows["dimensions"] = dimensions
    vectors = rows["vector"]
    for i, clip in enumerate(clips):  # into place: no stacked copy of all of them
        vectors[i] = clip.vector
    rows["hash_size"] = width
    rows["hash"] = [clip.text_hash.encode("ascii") for clip in clips]
    return rows


def _raw_connection(key_type: str):
    """The psycopg connection, with the session's staging table.

    The table is created (if missing) inside every write's transaction: a rolled-back
    transaction takes a table it created with it, so remembering "created" would be wrong.
    """
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cur:
        cur.execute(sql.create_staging(key_type))
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
    key_type = clip_key_type(connection)
    with transaction.atomic():
        raw = _raw_connection(key_type)
        with raw.cursor() as cur:
            with cur.copy(sql.COPY_TO_STAGING) as copy:
                copy.write(COPY_SIGNATURE)
                for start in range(0, len(clips), COPY_SLICE):
                    rows = copy_rows(clips[start : start + COPY_SLICE], key_type)
                    copy.write(rows.view(np.uint8).data)
                copy.write(COPY_TRAILER)
            cur.execute(sql.ANALYZE_STAGING)
            if version_id is None:
                cur.execute(sql.WRITE_FROM_STAGING, (model, dimensions))
            else:
                cur.execute(sql.WRITE_BUILD_FROM_STAGING, (version_id,))
            written = {row[0] for row in cur.fetchall()}
            release([clip.id for clip in clips], run_id, cursor=cur)
    return written


def record_failures(failures: dict, *, run_id: int | None) -> None:
    """Keep why each clip failed, and free it: later runs select it again."""
    if not failures:
        return
    ids = list(failures)
    with transaction.atomic(), connection.cursor() as cur:
        statement = sql.record_failures(clip_key_type(connection))
        cur.execute(statement, [ids, [failures[i][:1000] for i in ids]])
        release(ids, run_id, cursor=cur)
