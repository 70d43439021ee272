"""Keeping the coverage counts: installing the triggers, counting the base once, folding the
deltas into the totals, and proving the totals against a fresh count.

Exact without locking the table: the triggers exist before the base is counted, and the base
is counted in one statement (one snapshot): the clips' buckets as that snapshot sees them,
minus the deltas that same snapshot sees. Every write committed after it adds its own deltas
(https://www.postgresql.org/docs/current/transaction-iso.html: a statement sees what was
committed before it began, and its own transaction's writes).
"""

from dataclasses import dataclass

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from embeddings.coverage.triggers import (
    BASE,
    DELTAS,
    FINGERPRINT_SQL,
    KEY,
    TOTALS,
    clip_rows,
    drop_sql,
    drop_triggers_sql,
    facets,
    install_sql,
    ledger_rows,
    pending_index_sql,
    summed,
    triggers_sql,
    unfolded,
)
from embeddings.site_table.adoption import give_back_index, own_index_name, take_in_index
from embeddings.site_table.catalog import CLIPS
from embeddings.site_table.locking import execute_briefly

PENDING_INDEX = "clips_pending_idx"
# One fold (or rebase) at a time: an advisory lock of this key (any fixed bigint).
FOLD_LOCK = 0x636F7665  # "cove"


def install(db: BaseDatabaseWrapper) -> None:
    """Everything the counts need, on the tool's own `clips` or a site's: the ledger, the
    triggers (the only statement that locks `clips`, briefly), the base, the index."""
    with db.cursor() as cursor:
        for statement in install_sql(db):
            cursor.execute(statement)
    execute_briefly(db, triggers_sql())
    rebase(db)
    name = own_index_name(db, PENDING_INDEX)
    take_in_index(db, name, pending_index_sql(name))


def remove(db: BaseDatabaseWrapper) -> None:
    """Undo `install`: on a site's table only what the tool added."""
    execute_briefly(db, drop_triggers_sql())
    give_back_index(db, own_index_name(db, PENDING_INDEX))
    with db.cursor() as cursor:
        for statement in drop_sql():
            cursor.execute(statement)


def rebase(db: BaseDatabaseWrapper = connection) -> None:
    """Totals from a fresh count of `clips`, in one snapshot, minus the deltas it sees (they
    are folded in later). Holds the fold lock, so no fold moves deltas meanwhile."""
    columns = ", ".join((*KEY, "n"))
    base = summed(f"{facets(clip_rows(db, [(1, CLIPS)]))} UNION ALL {unfolded(sign=-1)}")
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
        cursor.execute(f"DELETE FROM {TOTALS}")
        cursor.execute(f"INSERT INTO {TOTALS} ({columns}) {base}")
        cursor.execute(f"DELETE FROM {BASE}")
        cursor.execute(f"INSERT INTO {BASE} (fingerprint) {FINGERPRINT_SQL}")


def fold(db: BaseDatabaseWrapper = connection) -> None:
    """Move the deltas into the totals, unless another reader is doing it right now (an
    emptied bucket keeps its row, at 0: deleting them would scan the totals). After
    DDL that changed the bucket's columns (`triggers.BUCKET_COLUMNS`), count the base again
    first: once, by the first reader after it."""
    key = ", ".join(KEY)
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT ({FINGERPRINT_SQL}) IS DISTINCT FROM (SELECT fingerprint FROM {BASE})"
        )
        if cursor.fetchone()[0]:
            rebase(db)
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLD_LOCK])
        if not cursor.fetchone()[0]:
            return
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DELTAS} RETURNING *)"
            f" INSERT INTO {TOTALS} AS t ({key}, n) {summed(unfolded('moved'))}"
            f" ON CONFLICT ({key}) DO UPDATE SET n = t.n + excluded.n"
        )


@dataclass(frozen=True)
class Difference:
    bucket: dict[str, object]
    counted: int  # by the triggers
    actual: int  # by count(*) now


def differences(db: BaseDatabaseWrapper = connection) -> list[Difference]:
    """Buckets whose kept count differs from count(*), both read in one statement."""
    truth = facets(clip_rows(db, [(1, CLIPS)]))
    kept = ledger_rows(-1)  # truth minus kept: zero for every bucket when they agree
    columns = ", ".join(KEY)
    query = (
        f"SELECT {columns}, sum(n) FILTER (WHERE side = 'kept')::bigint,"
        f" sum(n) FILTER (WHERE side = 'actual')::bigint"
        f" FROM (SELECT {columns}, n, 'actual' AS side FROM ({truth}) AS a"
        f" UNION ALL SELECT {columns}, -n, 'kept' FROM ({kept}) AS k) AS both_sides"
        f" GROUP BY {columns} HAVING sum(n) FILTER (WHERE side = 'kept')"
        f" IS DISTINCT FROM sum(n) FILTER (WHERE side = 'actual')"
        f" ORDER BY {columns}"
    )
    with db.cursor() as cursor:
        cursor.execute(query)
        rows = cursor.fetchall()
    return [
        Difference(dict(zip(KEY, row[: len(KEY)], strict=True)), row[-2] or 0, row[-1] or 0)
        for row in rows
        if (row[-2] or 0) != (row[-1] or 0)
    ]


def describe(difference: Difference) -> str:
    """One line naming the bucket and both counts, the empty parts of the bucket left out."""
    parts = ", ".join(
        f"{name}={value}" for name, value in difference.bucket.items() if value is not None
    )
    return f"{parts}: kept {difference.counted}, counted now {difference.actual}"


@dataclass(frozen=True)
class Reconciliation:
    found: list[Difference]  # before any fix
    left: list[Difference]  # after `fix` (the same when not fixing)


def reconcile(*, fix: bool = False, db: BaseDatabaseWrapper = connection) -> Reconciliation:
    """The kept counts, as a reader gets them (folded), against count(*); `fix`: when they
    differ, count the base again."""
    fold(db)
    found = differences(db)
    if not (fix and found):
        return Reconciliation(found, found)
    rebase(db)
    return Reconciliation(found, differences(db))
