"""A backfill run from start to end: the record, the lease, the index mode, the pipeline.

The command, the django-q2 tasks and the admin actions all call `execute_backfill`. The run's
row tells the truth while it goes and after it dies: counts are saved every few seconds, and a
`running` row whose lease is gone is settled as `interrupted` by the next run and by every
reader of the history (`settle_dead_runs`).
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.allocator import keep_memory_flat
from embeddings.backfill.claims import RunLease, other_live_runs, settle_dead_runs
from embeddings.backfill.index import build_hnsw_index, drop_hnsw_index, owed_index_names
from embeddings.backfill.pipeline import Backfill, BackfillOptions, BackfillProgress
from embeddings.backfill.site_vectors import check_site_vectors
from embeddings.backfill.write_mode import WriteMode
from embeddings.models import BackfillRun
from embeddings.service.embedding_service import EmbeddingService

logger = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 2.0


def cost_usd(tokens: int, config: EmbeddingSettings, *, batch: bool = False) -> Decimal | None:
    """List price of `tokens`; `batch`: at the Batch API's price (half)."""
    price = config.batch_price_per_million_tokens if batch else config.price_per_million_tokens
    if price is None:
        return None
    return (Decimal(tokens) * Decimal(str(price)) / Decimal(1_000_000)).quantize(Decimal("1e-6"))


class RunRecorder:
    """Keeps a run's row in step with its progress: at most every few seconds, and at the end."""

    COUNTS = (
        "total",
        "processed",
        "skipped",
        "failed",
        "cache_hits",
        "requests",
        "retries",
        "rate_limited",
        "tokens",
        "cost_usd",
        "duration_seconds",
    )

    def __init__(self, run: BackfillRun, config: EmbeddingSettings, *, batch: bool = False) -> None:
        self.run = run
        self.config = config
        self.batch = batch
        self._saved_at = float("-inf")
        self._saving = threading.Lock()  # the writers and the heartbeat both save

    def progress(self, progress: BackfillProgress) -> None:
        with self._saving:
            if time.monotonic() - self._saved_at < SAVE_EVERY_SECONDS:
                return
            self._saved_at = time.monotonic()
            self._copy(progress)
            self.run.updated_at = timezone.now()
            counts = {name: getattr(self.run, name) for name in self.COUNTS}
        BackfillRun.objects.filter(pk=self.run.pk, status=BackfillRun.Status.RUNNING).update(
            **counts, updated_at=self.run.updated_at
        )

    def heartbeat(self, progress: Callable[[], BackfillProgress]) -> Callable[[], None]:
        """Save every few seconds whether or not a batch was written, so a run killed before
        its first write is settled with the time it lived (`updated_at - started_at`), not
        0 s. Returns the function that stops it (before `finish`)."""
        stopped = threading.Event()

        def beat() -> None:
            try:
                while not stopped.wait(SAVE_EVERY_SECONDS):
                    try:
                        self.progress(progress())
                    except Exception as err:  # the database may be gone: the run says so
                        logger.warning("could not save the run's progress: %s", err)
            finally:
                connection.close()

        thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            thread.join(timeout=10)

        return stop

    def finish(self, progress: BackfillProgress) -> None:
        run = self.run
        if progress.fatal is not None:
            run.status = BackfillRun.Status.FAILED
            run.error = str(progress.fatal)
        elif progress.interrupted:
            run.status = BackfillRun.Status.INTERRUPTED
        elif progress.failed:
            run.status = BackfillRun.Status.FAILED
        else:
            run.status = BackfillRun.Status.SUCCEEDED
        if progress.failed and not run.error:
            reasons = progress.reasons.most_common(3)
            run.error = "; ".join(f"{n} x {reason}" for reason, n in reasons)
        self._copy(progress)
        run.finished_at = run.updated_at = timezone.now()
        run.save()

    def _copy(self, progress: BackfillProgress) -> None:
        run, stats = self.run, progress.stats
        run.total = progress.total
        run.processed = progress.processed
        run.skipped = progress.skipped
        run.failed = progress.failed
        run.cache_hits = stats.cache_hits
        run.requests = stats.requests
        run.retries = stats.retries
        run.rate_limited = stats.rate_limited
        run.tokens = stats.tokens
        run.cost_usd = cost_usd(stats.tokens, self.config, batch=self.batch) or Decimal(0)
        run.duration_seconds = progress.duration


def execute_backfill(
    service: EmbeddingService,
    options: BackfillOptions,
    config: EmbeddingSettings,
    *,
    trigger: str,
    index_mode: WriteMode = WriteMode.LIVE,
    total: int | None = None,
    on_start: Callable[[Backfill], None] | None = None,
    on_progress: Callable[[BackfillProgress], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[BackfillProgress, BackfillRun | None]:
    """Run the pipeline once; record it as a BackfillRun unless it is a dry run. `index_mode`
    (see `write_mode`): rebuild drops the clips index for the run and builds it once after,
    whatever happens, and the run lasts until the index is back; bulk only records that this
    run is a pass of a large rewrite. `total`: the selection's size, if already counted."""
    keep_memory_flat()
    run = lease = recorder = None
    if not options.dry_run:
        check_site_vectors(service, config, on_step=on_step)
        settle_dead_runs()
        lease = RunLease()
        run = BackfillRun.objects.create(
            pk=lease.run_id,
            trigger=trigger,
            options=jsonable_options(options),
            model=config.model,
            dimensions=config.dimensions,
            index_mode=index_mode,
            updated_at=timezone.now(),
        )
        recorder = RunRecorder(run, config)

    def progressed(progress: BackfillProgress) -> None:
        if recorder:
            recorder.progress(progress)
        if on_progress:
            on_progress(progress)

    backfill = Backfill(
        service,
        options,
        run_id=run.pk if run else None,
        total=total,
        on_progress=progressed,
        on_poll=on_poll,
    )
    stop_heartbeat = None
    rebuild = index_mode == WriteMode.REBUILD and run is not None
    if run is not None and on_step:
        others = other_live_runs(run.pk)
        if others:
            ids = ", ".join(f"#{other}" for other in others)
            on_step(f"another run is in progress ({ids}): the clips it holds are left to it")
    try:
        if recorder:
            stop_heartbeat = recorder.heartbeat(lambda: backfill.progress)
        if on_start:
            on_start(backfill)
        if rebuild:
            drop_hnsw_index()
        progress = backfill.run()
    finally:
        if stop_heartbeat:
            stop_heartbeat()
        if lease:
            try:
                _pay_owed_indexes(lease, backfill.progress, on_step)
            finally:
                lease.close()
    if recorder:
        recorder.finish(progress)
    return progress, run


def _pay_owed_indexes(
    lease: RunLease, progress: BackfillProgress, on_step: Callable[[str], None] | None
) -> None:
    """Bring back the indexes a rebuild run took down, once, by the last run to finish: never
    while another run is still writing (it would write through the index it was spared)."""
    if not owed_index_names():
        return
    lease.finish_alone()
    others = other_live_runs(lease.run_id)
    if others:
        if on_step:
            ids = ", ".join(f"#{other}" for other in others)
            on_step(f"the HNSW index is left to the last run to finish: {ids} still writing")
        return
    if on_step:
        on_step("building the HNSW index (CONCURRENTLY: search and saves go on)")
    started = time.monotonic()
    build_hnsw_index(concurrently=True)
    progress.finished = time.monotonic()
    progress.index_build_seconds = progress.finished - started


def jsonable_options(options: BackfillOptions) -> dict:
    data = asdict(options)
    selection = data["selection"]
    if selection["created_after"] is not None:
        selection["created_after"] = selection["created_after"].isoformat()
    if selection["ids"] is not None:
        selection["ids"] = len(selection["ids"])
    return data
