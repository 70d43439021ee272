"""Stream demo clips into `clips` with PostgreSQL COPY.

COPY loads 100,000 clips in a few seconds where ORM inserts would take minutes.
"""

import time
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from embeddings.demo.generator import DEMO_TWITCH_ID_REGEX, ROW_COLUMNS, generate_demo_clips
from embeddings.models import Clip

CLIPS = sql.Identifier(Clip._meta.db_table)

COPY_COLUMNS = (*ROW_COLUMNS, "embedding_attempts")


@dataclass(frozen=True)
class DemoLoadResult:
    """What one load wrote, for the command's summary and for benchmarks."""

    loaded: int
    removed: int
    seconds: float

    @property
    def live(self) -> int:
        return self.loaded - self.removed


def next_demo_index() -> int:
    """One past the highest demo index already in `clips`, so a new load cannot collide."""
    with connection.cursor() as cursor:
        query = sql.SQL(
            "SELECT max((regexp_match(twitch_clip_id, '_([0-9]+)$'))[1]::bigint) "
            "FROM {clips} WHERE twitch_clip_id ~ %s"
        ).format(clips=CLIPS)
        cursor.execute(query.as_string(), [DEMO_TWITCH_ID_REGEX])
        (highest,) = cursor.fetchone()
    return 0 if highest is None else highest + 1


def load_demo_clips(
    count: int, *, seed: int = 0, replace: bool = False, now: datetime | None = None
) -> DemoLoadResult:
    """Write `count` demo clips in one transaction with COPY; `replace` empties `clips` first.

    Without `replace` the clips are added after any already loaded. The table is locked
    against other writers for the load, so two loaders cannot pick the same numbers.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    now = now or timezone.now()
    started = time.perf_counter()
    removed = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if replace:
            # Their build rows go with them (a switch's or a large run's vectors).
            cursor.execute(sql.SQL("TRUNCATE {clips} CASCADE").format(clips=CLIPS).as_string())
        else:
            lock = sql.SQL("LOCK TABLE {clips} IN SHARE ROW EXCLUSIVE MODE").format(clips=CLIPS)
            cursor.execute(lock.as_string())
        start = 0 if replace else next_demo_index()
        # COPY applies no Django defaults: embedding_attempts is written explicitly, and
        # text_hash (a generated column) is left for PostgreSQL to compute.
        copy_sql = sql.SQL("COPY {clips} ({columns}) FROM STDIN").format(
            clips=CLIPS, columns=sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))
        )
        with cursor.copy(copy_sql.as_string()) as copy:
            for clip in generate_demo_clips(count, seed=seed, now=now, start=start):
                removed += clip.is_removed
                copy.write_row((*clip.row(), 0))
    return DemoLoadResult(loaded=count, removed=removed, seconds=time.perf_counter() - started)
