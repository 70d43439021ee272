"""How much of the catalogue has a current vector: the numbers behind the admin's coverage page
and `/metrics`, counted by the same expressions so the two always agree.

Both read the counts the triggers on `clips` keep (`embeddings.coverage.tally`,
docs/coverage-counts.md): a handful of small queries whatever the table's size, exact at
every moment. The failure reasons come through the small partial index of failed clips.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from embeddings.coverage.tally import Tally, counted_tally
from embeddings.models import Clip, failed_q

TallyOf = Callable[[str, int, datetime | None], Tally]  # counted_tally or scanned_tally

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


def coverage_counts(
    model: str, dimensions: int, *, tally_of: TallyOf = counted_tally
) -> CoverageCounts:
    """The counts alone, for `/metrics`: no days, no failure reasons."""
    tally = tally_of(model, dimensions, None)
    totals = tally.totals
    return CoverageCounts(
        live=totals["live"],
        blank=totals["blank"],
        current=totals["current"],
        stale=totals["with_vector"] - totals["current"],
        failed=totals["failed"],
        oldest_pending_at=tally.oldest_pending_at,
    )


def coverage_report(
    model: str, dimensions: int, *, days: int = CHART_DAYS, tally_of: TallyOf = counted_tally
) -> CoverageReport:
    """`tally_of`: `tally.scanned_tally` counts the same numbers by a full scan."""
    failed = Q(is_removed=False) & failed_q(model, dimensions)
    first_day = timezone.localdate() - timedelta(days=days - 1)
    window_start = timezone.make_aware(datetime.combine(first_day, time.min))
    tally = tally_of(model, dimensions, window_start)
    totals = tally.totals
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
        oldest_pending_at=tally.oldest_pending_at,
        models=sorted(
            (
                ModelCoverage(
                    model=name or "(none)",
                    dimensions=size,
                    clips=counts["with_vector"],
                    current=counts["current"],
                )
                for (name, size), counts in tally.by_model.items()
                if counts["with_vector"]
            ),
            key=lambda m: (-m.clips, m.model),
        ),
        days=_days(first_day, days, totals, tally.made_on, tally.current_made_on, tally.created_on),
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
