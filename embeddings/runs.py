"""A backfill run from start to end: the record, the lease, the index mode, the pipeline.

The command, the django-q2 tasks and the admin actions all call `execute_backfill`.
"""

from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal

from django.utils import timezone

from embeddings.allocator import keep_memory_flat
from embeddings.claims import RunLease
from embeddings.conf import EmbeddingSettings
from embeddings.hnsw_index import build_hnsw_index, drop_hnsw_index
from embeddings.models import BackfillRun
from embeddings.pipeline import Backfill, BackfillOptions, BackfillProgress
from embeddings.service import EmbeddingService


def cost_usd(tokens: int, config: EmbeddingSettings) -> Decimal | None:
    price = config.price_per_million_tokens
    if price is None:
        return None
    return (Decimal(tokens) * Decimal(str(price)) / Decimal(1_000_000)).quantize(Decimal("1e-6"))


def execute_backfill(
    service: EmbeddingService,
    options: BackfillOptions,
    config: EmbeddingSettings,
    *,
    trigger: str,
    rebuild_index: bool = False,
    on_start: Callable[[Backfill], None] | None = None,
    on_progress: Callable[[BackfillProgress], None] | None = None,
) -> tuple[BackfillProgress, BackfillRun | None]:
    """Run the pipeline once; record it as a BackfillRun unless it is a dry run."""
    keep_memory_flat()
    run = None
    if not options.dry_run:
        run = BackfillRun.objects.create(
            trigger=trigger,
            options=_jsonable(options),
            model=config.model,
            dimensions=config.dimensions,
            index_mode="rebuild" if rebuild_index else "live",
        )
    lease = RunLease(run.pk) if run else None
    backfill = Backfill(service, options, run_id=run.pk if run else None, on_progress=on_progress)
    if on_start:
        on_start(backfill)
    try:
        if rebuild_index and run:
            drop_hnsw_index()
        progress = backfill.run()
    finally:
        if rebuild_index and run:
            build_hnsw_index()
        if lease:
            lease.close()
    if run:
        _record(run, progress, config)
    return progress, run


def _record(run: BackfillRun, progress: BackfillProgress, config: EmbeddingSettings) -> None:
    if progress.fatal is not None:
        run.status = BackfillRun.Status.FAILED
        run.error = str(progress.fatal)
    elif progress.interrupted:
        run.status = BackfillRun.Status.INTERRUPTED
    else:
        run.status = BackfillRun.Status.FAILED if progress.failed else BackfillRun.Status.SUCCEEDED
    if progress.failed and not run.error:
        run.error = "; ".join(f"{n} x {reason}" for reason, n in progress.reasons.most_common(3))
    run.finished_at = timezone.now()
    run.total = progress.total
    run.processed = progress.processed
    run.skipped = progress.skipped
    run.failed = progress.failed
    run.cache_hits = progress.stats.cache_hits
    run.requests = progress.stats.requests
    run.tokens = progress.stats.tokens
    run.cost_usd = cost_usd(progress.stats.tokens, config) or Decimal(0)
    run.duration_seconds = progress.duration
    run.save()


def _jsonable(options: BackfillOptions) -> dict:
    data = asdict(options)
    selection = data["selection"]
    if selection["created_after"] is not None:
        selection["created_after"] = selection["created_after"].isoformat()
    if selection["ids"] is not None:
        selection["ids"] = len(selection["ids"])
    return data
