"""How much of the catalogue has a current vector: the numbers behind the admin's coverage page
and `/metrics`, counted by the same expressions so the two always agree.

The page takes three queries whatever the table's size: one pass over the clips grouped by
(model, size, day the vector was made if recent) gives every count, the breakdown by model and
the vectors made per day; clips created per day come through the `created_at` index, and the
failure reasons through the small partial index of failed clips. `/metrics` needs only the
counts: one aggregate pass.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Case, Count, DateField, Min, Q, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from embeddings.models import BLANK_Q, Clip, current_embedding_q, failed_q

CHART_DAYS = 30
TOP_FAILURE_REASONS = 5


@dataclass(frozen=True)
class ModelCoverage:
    """Live clips holding a vector made by one model at one size."""

    model: str
    dimensions: int | None
    clips: int
    current: int

    @property
    def stale(self) -> int:
        return self.clips - self.current


@dataclass(frozen=True)
class DayCoverage:
    day: date
    embedded: int  # vectors made that day that live clips still hold
    coverage_percent: float | None  # at the end of the day as today's rows tell; None: no clips


@dataclass(frozen=True)
class CoverageReport:
    model: str
    dimensions: int
    live: int
    current: int
    stale: int  # holds a vector, but not one of its present text, model and size
    failed: int  # the last attempt failed and no current vector (it may be stale too)
    never_embedded: int  # live, no vector at all, some text to embed
    blank: int  # live, every text field blank: nothing to embed
    removed: int
    failure_reasons: list[tuple[str, int]]
    models: list[ModelCoverage]
    days: list[DayCoverage]
    oldest_pending_at: datetime | None  # the text of the clip waiting longest changed then

    @property
    def oldest_pending_seconds(self) -> float:
        return _age_seconds(self.oldest_pending_at)

    @property
    def missing(self) -> int:
        """Live clips the next run would embed."""
        return self.live - self.blank - self.current

    @property
    def coverage_percent(self) -> float:
        """Of the live clips that have text to embed."""
        return _percent(self.current, self.live - self.blank)


def _count_expressions(model: str, dimensions: int) -> dict[str, Count | Min]:
    pending = Q(is_removed=False) & ~current_embedding_q(model, dimensions) & ~BLANK_Q
    return {
        "oldest_pending_at": Min("text_changed_at", filter=pending),
        "live": Count("pk", filter=Q(is_removed=False)),
        "blank": Count("pk", filter=Q(is_removed=False) & BLANK_Q),
        "removed": Count("pk", filter=Q(is_removed=True)),
        "with_vector": Count("pk", filter=Q(is_removed=False, embedding__isnull=False)),
        "current": Count("pk", filter=Q(is_removed=False) & current_embedding_q(model, dimensions)),
        "failed": Count("pk", filter=Q(is_removed=False) & failed_q(model, dimensions)),
    }


@dataclass(frozen=True)
class CoverageCounts:
    live: int
    blank: int
    current: int
    stale: int
    failed: int
    oldest_pending_at: datetime | None

    @property
    def oldest_pending_seconds(self) -> float:
        """How long the clip waiting longest has waited (0: none waits): live sync's lag."""
        return _age_seconds(self.oldest_pending_at)

    @property
    def pending(self) -> int:
        """Live clips the next run would embed: no vector, or a stale one."""
        return self.live - self.blank - self.current


def coverage_counts(model: str, dimensions: int) -> CoverageCounts:
    totals = Clip.objects.order_by().aggregate(**_count_expressions(model, dimensions))
    return CoverageCounts(
        live=totals["live"],
        blank=totals["blank"],
        current=totals["current"],
        stale=totals["with_vector"] - totals["current"],
        failed=totals["failed"],
        oldest_pending_at=totals["oldest_pending_at"],
    )


def coverage_report(model: str, dimensions: int, *, days: int = CHART_DAYS) -> CoverageReport:
    failed = Q(is_removed=False) & failed_q(model, dimensions)
    first_day = timezone.localdate() - timedelta(days=days - 1)
    window_start = timezone.make_aware(datetime.combine(first_day, time.min))

    groups = list(
        Clip.objects.order_by()
        .annotate(
            day_made=Case(
                When(
                    embedding_generated_at__gte=window_start,
                    then=TruncDate("embedding_generated_at"),
                ),
                output_field=DateField(),
            ),
            # Folded into the same pass: a second query for it scanned the table again.
            day_created=Case(
                When(created_at__gte=window_start, then=TruncDate("created_at")),
                output_field=DateField(),
            ),
        )
        .values("embedding_model", "embedding_dimensions", "day_made", "day_created")
        .annotate(**_count_expressions(model, dimensions))
    )
    totals = Counter()
    waiting_since = [g["oldest_pending_at"] for g in groups if g["oldest_pending_at"] is not None]
    by_model: dict[tuple[str | None, int | None], Counter] = {}
    made_on: Counter = Counter()
    current_made_on: Counter = Counter()
    created_on: Counter = Counter()
    for group in groups:
        names = ("live", "blank", "removed", "with_vector", "current", "failed")
        counts = {k: group[k] for k in names}
        totals.update(counts)
        key = (group["embedding_model"], group["embedding_dimensions"])
        by_model.setdefault(key, Counter()).update(counts)
        if group["day_made"] is not None:
            made_on[group["day_made"]] += group["with_vector"]
            current_made_on[group["day_made"]] += group["current"]
        if group["day_created"] is not None:
            created_on[group["day_created"]] += group["live"]

    return CoverageReport(
        model=model,
        dimensions=dimensions,
        live=totals["live"],
        current=totals["current"],
        stale=totals["with_vector"] - totals["current"],
        failed=totals["failed"],
        never_embedded=totals["live"] - totals["with_vector"] - totals["blank"],
        blank=totals["blank"],
        removed=totals["removed"],
        failure_reasons=_failure_reasons(failed),
        oldest_pending_at=min(waiting_since, default=None),
        models=sorted(
            (
                ModelCoverage(
                    model=name or "(none)",
                    dimensions=size,
                    clips=counts["with_vector"],
                    current=counts["current"],
                )
                for (name, size), counts in by_model.items()
                if counts["with_vector"]
            ),
            key=lambda m: (-m.clips, m.model),
        ),
        days=_days(first_day, days, totals, made_on, current_made_on, created_on),
    )


def _failure_reasons(failed: Q) -> list[tuple[str, int]]:
    rows = (
        Clip.objects.filter(failed)
        .order_by()
        .values("embedding_error")
        .annotate(clips=Count("pk"))
        .order_by("-clips", "embedding_error")[:TOP_FAILURE_REASONS]
    )
    return [(row["embedding_error"], row["clips"]) for row in rows]


def _days(
    first_day: date,
    days: int,
    totals: Counter,
    made_on: Counter,
    current_made_on: Counter,
    created_on: Counter,
) -> list[DayCoverage]:
    """Coverage at the end of each day, from today's rows: clips created later are taken out
    of the whole, current vectors made later out of the part. No history table needed."""
    result = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        created_later = sum(n for d, n in created_on.items() if d > day)
        current_later = sum(n for d, n in current_made_on.items() if d > day)
        live = totals["live"] - totals["blank"] - created_later
        result.append(
            DayCoverage(
                day=day,
                embedded=made_on[day],
                coverage_percent=_percent(totals["current"] - current_later, live)
                if live
                else None,
            )
        )
    return result


def _age_seconds(moment: datetime | None) -> float:
    return max(0.0, (timezone.now() - moment).total_seconds()) if moment else 0.0


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0
