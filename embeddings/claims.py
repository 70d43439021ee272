"""Which clips a run works on: keyset selection, and claims so two runs never share a clip.

A run holds a PostgreSQL advisory lock for its whole life on a connection of its own. A claim
row counts only while the lock of its run is held: when a run ends, or is killed with -9, the
server drops the lock and its clips are free at once for the next run to take over.
"""

from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.db import connection, connections
from django.db.models.expressions import RawSQL

from embeddings.models import Clip

LOCK_NAMESPACE = 0x636C6970  # "clip": the first key of every run's advisory lock

_LIVE_RUNS = f"""
    SELECT objid::bigint FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {LOCK_NAMESPACE} AND objsubid = 2 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class Selection:
    """What a run covers. `force` takes every live clip, else only those lacking a current
    vector; the other fields narrow it (command flags, scheduled runs, task ranges, admin)."""

    model: str
    dimensions: int
    force: bool = False
    created_after: datetime | None = None
    min_id: int | None = None
    max_id: int | None = None
    ids: tuple[int, ...] | None = None

    def queryset(self):
        qs = (
            Clip.objects.live() if self.force else Clip.objects.pending(self.model, self.dimensions)
        )
        if self.created_after is not None:
            qs = qs.filter(created_at__gte=self.created_after)
        if self.min_id is not None:
            qs = qs.filter(id__gte=self.min_id)
        if self.max_id is not None:
            qs = qs.filter(id__lte=self.max_id)
        if self.ids is not None:
            qs = qs.filter(id__in=self.ids)
        return qs


@dataclass(frozen=True, order=True)
class ClaimedClip:
    id: int
    text: str
    text_hash: str


class RunLease:
    """The advisory lock that keeps a run's claims valid; released on close or on death."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        db = connections["default"]
        self._conn: psycopg.Connection = db.get_new_connection(db.get_connection_params())
        self._conn.autocommit = True
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, run_id))
        # Claims left by runs that died are taken over lazily; clear them here as well.
        self._conn.execute(f"DELETE FROM embedding_claims WHERE run_id NOT IN ({_LIVE_RUNS})")

    def close(self) -> None:
        try:
            self._conn.execute("DELETE FROM embedding_claims WHERE run_id = %s", (self.run_id,))
        except psycopg.Error:
            pass  # database gone: the lock went with the connection, the claims count for nothing
        finally:
            self._conn.close()


def claim_next(
    selection: Selection, *, after_id: int, limit: int, run_id: int | None
) -> tuple[list[ClaimedClip], int | None]:
    """The next `limit` selected clips after `after_id` that no live run holds.

    Returns the clips this run now holds (all of them when `run_id` is None: a dry run reads
    without claiming) and the cursor for the next call (None when the selection is exhausted).
    One statement, one round trip: pick candidates, claim them, read their text.
    """
    candidates = selection.queryset().filter(id__gt=after_id).order_by("id").values("id")[:limit]
    candidate_sql, candidate_params = candidates.query.sql_with_params()
    texts = Clip.objects.with_text().filter(id__in=RawSQL("SELECT clip_id FROM claimed", ()))
    text_sql, text_params = texts.values_list("id", "text", "text_hash").query.sql_with_params()
    if run_id is None:
        claimed_sql, claim_params = "SELECT id AS clip_id FROM candidates", []
    else:
        claimed_sql = f"""
            INSERT INTO embedding_claims (clip_id, run_id, claimed_at)
            SELECT id, %s, now() FROM candidates
            ON CONFLICT (clip_id) DO UPDATE
                SET run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at
                WHERE embedding_claims.run_id NOT IN ({_LIVE_RUNS})
            RETURNING clip_id"""
        claim_params = [run_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH candidates AS MATERIALIZED ({candidate_sql}), claimed AS ({claimed_sql})
            SELECT (SELECT max(id) FROM candidates), texts.*
            FROM (SELECT 1) AS one LEFT JOIN ({text_sql}) AS texts ON true
            """,
            [*candidate_params, *claim_params, *text_params],
        )
        rows = cursor.fetchall()
    cursor_id = rows[0][0]
    clips = sorted(ClaimedClip(*row[1:]) for row in rows if row[1] is not None)
    if run_id is not None and clips:
        clips = _still_selected(selection, clips, run_id)
    return clips, cursor_id


def _still_selected(
    selection: Selection, clips: list[ClaimedClip], run_id: int
) -> list[ClaimedClip]:
    """Drop clips another run finished while this claim waited on their claim rows.

    The claim picked its candidates from its statement's snapshot; a run whose write (and
    claim release) committed meanwhile leaves the clip free to claim although it no longer
    needs a vector. A new statement sees that write.
    """
    ids = [clip.id for clip in clips]
    selected = set(selection.queryset().filter(id__in=ids).values_list("id", flat=True))
    if len(selected) == len(ids):
        return clips
    release([i for i in ids if i not in selected], run_id)
    return [clip for clip in clips if clip.id in selected]


def release(clip_ids: list[int], run_id: int | None) -> None:
    if run_id is None or not clip_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM embedding_claims WHERE run_id = %s AND clip_id = ANY(%s)",
            [run_id, clip_ids],
        )
