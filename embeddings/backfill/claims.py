"""Claims, so two runs never pay for one clip: the run's lease, and claiming the next batch.

A run holds a PostgreSQL advisory lock for its whole life on a connection of its own. A claim
row counts only while the lock of its run is held: when a run ends, or is killed with -9, the
server drops the lock and its clips are free at once for the next run to take over.
"""

import uuid
from dataclasses import dataclass

import psycopg
from django.db import connection, connections
from django.db.models.expressions import RawSQL

from embeddings.backfill import sql
from embeddings.backfill.selection import Selection
from embeddings.models import Clip
from embeddings.site_table.record import clip_key_type

DIED = "the process running it died (killed, or its machine lost): counts are as last saved"


def settle_dead_runs() -> int:
    """Mark `running` runs whose lease is gone as interrupted; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(sql.SETTLE_DEAD_RUNS, [DIED])
        return cursor.rowcount


@dataclass(frozen=True, order=True)
class ClaimedClip:
    id: int | uuid.UUID
    text: str
    text_hash: str


class RunLease:
    """The advisory lock that keeps a run's claims valid; released on close or on death.

    The lock is taken on a fresh run id before the run's row exists, so a reader that settles
    dead runs (`running` rows whose lock is gone) can never catch a run being created.
    """

    def __init__(self) -> None:
        db = connections["default"]
        self._conn: psycopg.Connection = db.get_new_connection(db.get_connection_params())
        self._conn.autocommit = True
        self.run_id: int = self._conn.execute(sql.NEXT_RUN_ID).fetchone()[0]
        self._conn.execute(sql.TAKE_LEASE, (*sql.TAKE_LEASE_ARGS, self.run_id))
        # Claims left by runs that died are taken over lazily; clear them here as well.
        self._conn.execute(sql.CLEAR_DEAD_CLAIMS)

    def finish_alone(self) -> None:
        """Wait until no other run is finishing: runs end one after another, so the last of
        them sees every other lease gone (`execute_backfill` builds owed indexes then)."""
        self._conn.execute(sql.TAKE_LEASE, (sql.FINISH_LOCK_NAMESPACE, 0))

    def close(self) -> None:
        try:
            self._conn.execute(sql.RELEASE_RUN_CLAIMS, (self.run_id,))
        except psycopg.Error:
            pass  # database gone: the lock went with the connection, the claims count for nothing
        finally:
            self._conn.close()


def claim_next(
    selection: Selection, *, after_id, limit: int, run_id: int | None
) -> tuple[list[ClaimedClip], object, int]:
    """The next `limit` selected clips after `after_id` that no live run holds.

    Returns the clips this run now holds (all of them when `run_id` is None: a dry run reads
    without claiming), the cursor for the next call (None when the selection is exhausted) and
    how many of the candidates another live run held.
    `after_id` None starts at the first key (keys are bigint or uuid: no number is "before all").
    One statement, one round trip: pick candidates, claim them, read their text.
    """
    candidates = selection.candidates(after_id=after_id, limit=limit)
    candidate_sql, candidate_params = candidates.query.sql_with_params()
    texts = Clip.objects.with_text().filter(id__in=RawSQL("SELECT clip_id FROM claimed", ()))
    text_sql, text_params = texts.values_list("id", "text", "text_hash_now").query.sql_with_params()
    if run_id is None:
        claimed_sql, claim_params = "SELECT id AS clip_id FROM candidates", []
    else:
        claimed_sql, claim_params = sql.CLAIM_CANDIDATES, [selection.version_id or 0, run_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH candidates AS MATERIALIZED ({candidate_sql}), claimed AS ({claimed_sql})
            SELECT (SELECT id FROM candidates ORDER BY id DESC LIMIT 1),
                   (SELECT count(*) FROM candidates), texts.*
            FROM (SELECT 1) AS one LEFT JOIN ({text_sql}) AS texts ON true
            """,
            [*candidate_params, *claim_params, *text_params],
        )
        rows = cursor.fetchall()
    cursor_id, candidate_count = rows[0][:2]
    clips = sorted(ClaimedClip(*row[2:]) for row in rows if row[2] is not None)
    held_elsewhere = candidate_count - len(clips)
    if run_id is not None and clips:
        clips = _still_selected(selection, clips, run_id)
    return clips, cursor_id, held_elsewhere


def other_live_runs(run_id: int | None) -> list[int]:
    """The ids of the runs alive now (their lease held), this one left out."""
    with connection.cursor() as cursor:
        cursor.execute(sql.LIVE_RUNS)
        return sorted(row[0] for row in cursor.fetchall() if row[0] != run_id)


def _still_selected(
    selection: Selection, clips: list[ClaimedClip], run_id: int
) -> list[ClaimedClip]:
    """Drop clips another run finished while this claim waited on their claim rows.

    The claim picked its candidates from its statement's snapshot; a run whose write (and
    claim release) committed meanwhile leaves the clip free to claim although it no longer
    needs a vector. A new statement sees that write.
    """
    ids = [clip.id for clip in clips]
    # One array parameter: `id__in=ids` had Django prepare each of up to 2,048 ids (4% of
    # a backfill's CPU samples).
    claimed = RawSQL(sql.unnest_keys(clip_key_type(connection)), (ids,))
    selected = set(selection.queryset().filter(id__in=claimed).values_list("id", flat=True))
    if len(selected) == len(ids):
        return clips
    release([i for i in ids if i not in selected], run_id)
    return [clip for clip in clips if clip.id in selected]


def release(clip_ids: list[int], run_id: int | None, *, cursor=None) -> None:
    """Free claims (on `cursor`, inside the caller's transaction, when given)."""
    if run_id is None or not clip_ids:
        return
    if cursor is not None:
        cursor.execute(sql.RELEASE_CLAIMS, [run_id, list(clip_ids)])
        return
    with connection.cursor() as own:
        own.execute(sql.RELEASE_CLAIMS, [run_id, list(clip_ids)])
