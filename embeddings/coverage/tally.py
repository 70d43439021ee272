"""The numbers behind the coverage page and `/metrics`, counted two ways by one set of
expressions: from the counts the triggers keep (`counted_tally`, what the page and /metrics
read: a few small queries whatever the table's size) and by a full scan of `clips`
(`scanned_tally`, the truth the tests and `reconcile_coverage` hold the counts to)."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Case, Count, DateField, Min, Q, Sum, When
from django.db.models.aggregates import Aggregate
from django.db.models.functions import Coalesce, TruncDate

from embeddings.coverage.buckets import CoverageBucket
from embeddings.coverage.ledger import fold
from embeddings.coverage.triggers import PENDING_INDEX_PREDICATE, PROBED, probed, state_call
from embeddings.models import BLANK_Q, Clip, current_embedding_q, failed_q
from embeddings.site_table.catalog import CLIPS

COUNTS = ("live", "blank", "removed", "with_vector", "current", "failed")


@dataclass
class Tally:
    by_model: dict[tuple[str | None, int | None], Counter] = field(default_factory=dict)
    made_on: Counter = field(default_factory=Counter)  # day -> live clips' vectors made then
    current_made_on: Counter = field(default_factory=Counter)  # of those, current ones
    created_on: Counter = field(default_factory=Counter)  # day -> live clips created then
    oldest_pending_at: datetime | None = None

    @property
    def totals(self) -> Counter:
        return sum(self.by_model.values(), Counter())


def pending_q(model: str, dimensions: int) -> Q:
    """Live clips with text to embed and no current vector."""
    return Q(is_removed=False) & ~current_embedding_q(model, dimensions) & ~BLANK_Q


def count_expressions(
    model: str, dimensions: int, count: Callable[[Q], Aggregate]
) -> dict[str, Aggregate]:
    """`count(q)`: how many clips match `q`, on `Clip` one per row, on `CoverageBucket` the
    sum of the buckets' sizes."""
    return {
        "live": count(Q(is_removed=False)),
        "blank": count(Q(is_removed=False) & BLANK_Q),
        "removed": count(Q(is_removed=True)),
        "with_vector": count(Q(is_removed=False, embedding__isnull=False)),
        "current": count(Q(is_removed=False) & current_embedding_q(model, dimensions)),
        "failed": count(Q(is_removed=False) & failed_q(model, dimensions)),
    }


def _clips(q: Q) -> Aggregate:
    return Count("pk", filter=q)


def _buckets(q: Q) -> Aggregate:
    return Coalesce(Sum("n", filter=q), 0)


def _day_of(column: str, window_start: datetime) -> Case:
    return Case(
        When(**{f"{column}__gte": window_start}, then=TruncDate(column)), output_field=DateField()
    )


def scanned_tally(model: str, dimensions: int, window_start: datetime | None) -> Tally:
    """One pass over every clip, grouped by (model, size, day the vector was made, day the
    clip was created); `window_start` None: no days."""
    days = {}
    if window_start is not None:
        days = {
            "day_made": _day_of("embedding_generated_at", window_start),
            "day_created": _day_of("created_at", window_start),
        }
    expressions = count_expressions(model, dimensions, _clips)
    expressions["oldest_pending_at"] = Min("text_changed_at", filter=pending_q(model, dimensions))
    groups = (
        Clip.objects.order_by()
        .annotate(**days)
        .values("embedding_model", "embedding_dimensions", *days)
        .annotate(**expressions)
    )
    tally = Tally()
    waiting_since = []
    for group in groups:
        counts = Counter({name: group[name] for name in COUNTS})
        key = (group["embedding_model"], group["embedding_dimensions"])
        tally.by_model.setdefault(key, Counter()).update(counts)
        if group["oldest_pending_at"] is not None:
            waiting_since.append(group["oldest_pending_at"])
        if group.get("day_made") is not None:
            tally.made_on[group["day_made"]] += group["with_vector"]
            tally.current_made_on[group["day_made"]] += group["current"]
        if group.get("day_created") is not None:
            tally.created_on[group["day_created"]] += group["live"]
    tally.oldest_pending_at = min(waiting_since, default=None)
    return tally


def counted_tally(model: str, dimensions: int, window_start: datetime | None) -> Tally:
    """The same numbers from the kept counts: the deltas folded first, then the buckets of
    every clip, of the days in the window, and one index probe per pending bucket."""
    fold()
    expressions = count_expressions(model, dimensions, _buckets)
    buckets = CoverageBucket.objects.order_by()
    tally = Tally()
    for group in (
        buckets.filter(facet="s")
        .values("embedding_model", "embedding_dimensions")
        .annotate(**expressions)
    ):
        key = (group["embedding_model"], group["embedding_dimensions"])
        tally.by_model[key] = Counter({name: group[name] for name in COUNTS})
    if window_start is not None:
        tally.made_on, tally.current_made_on = (
            _by_day(buckets.filter(facet="m"), window_start, expressions[name])
            for name in ("with_vector", "current")
        )
        tally.created_on = _by_day(buckets.filter(facet="c"), window_start, expressions["live"])
    pending = (
        buckets.filter(facet="s")
        .filter(pending_q(model, dimensions))
        .values_list("embedding_model", "embedding_dimensions", "state")
        .distinct()
    )
    tally.oldest_pending_at = oldest_text_change(list(pending))
    return tally


def _by_day(buckets, window_start: datetime, count: Aggregate) -> Counter:
    rows = (
        buckets.filter(quarter__gte=window_start)
        .annotate(day=TruncDate("quarter"))
        .values("day")
        .annotate(clips=count)
    )
    return Counter({row["day"]: row["clips"] for row in rows if row["clips"]})


def oldest_text_change(buckets: list[tuple[str | None, int | None, int]]) -> datetime | None:
    """The earliest `text_changed_at` of live clips in these (model, size, state) buckets: the
    first entry of each in the index of pending clips (`triggers.pending_index_sql`)."""
    if not buckets:
        return None
    probes, params = [], []
    for model, dimensions, state in buckets:
        vector = "IS NOT NULL" if state % 2 else "IS NULL"
        tests = [f"{state_call(vector=False)} = %s", f"embedding {vector}"]
        params.append(state - state % 2)
        for column, value in zip(PROBED, (model, dimensions), strict=True):
            tests.append(f"{probed(column)} = %s")
            params.append(PROBED[column] if value is None else value)
            tests.append(f"{column} IS NULL" if value is None else f"{column} = %s")
            params += [] if value is None else [value]
        probes.append(
            f"(SELECT text_changed_at FROM {CLIPS} WHERE {PENDING_INDEX_PREDICATE} AND"
            f" {' AND '.join(tests)} ORDER BY text_changed_at LIMIT 1)"
        )
    # An ordered walk of the index, stopping at the first row: a bitmap scan would fetch and
    # sort every clip of the bucket, which the planner may think cheaper. The settings last
    # to the end of this query (an error rolls them back with the savepoint).
    planner = ("enable_bitmapscan", "enable_seqscan")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("; ".join(f"SET LOCAL {name} = off" for name in planner))
        cursor.execute(f"SELECT min(t) FROM ({' UNION ALL '.join(probes)}) AS p(t)", params)
        oldest = cursor.fetchone()[0]
        cursor.execute("; ".join(f"SET LOCAL {name} TO DEFAULT" for name in planner))
    return oldest
