"""Ticking the Batch API work and recording it: the command's `--batch-api [--wait]` and the
schedule's poll both come through `execute_batch_job`.

One tick: bring the open batches' statuses, collect the finished ones, send preparing ones
while the queue has room. Only one process ticks at a time (an advisory lock held on the
ticking connection, so a process killed mid-tick frees it at once); another finds it taken
and leaves the work to the holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import connection

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.batch_api.collection import Collector, collectable, refresh_open
from embeddings.backfill.batch_api.queueing import queue_selection
from embeddings.backfill.batch_api.submission import submit_ready
from embeddings.backfill.claims import RunLease, settle_dead_runs
from embeddings.backfill.pipeline import BackfillOptions, BackfillProgress
from embeddings.backfill.runs import RunRecorder, jsonable_options
from embeddings.backfill.sql import BATCH_TICK_LOCK, BATCH_TICK_UNLOCK
from embeddings.exceptions import EmbeddingError, RetryableError, RunAborted
from embeddings.models import BackfillRun, EmbeddingBatch
from embeddings.service.cache import EmbeddingCache

if TYPE_CHECKING:  # the client pulls in openai: see providers/batch_shapes.py
    from embeddings.providers.openai_batch import OpenAIBatchClient

logger = logging.getLogger(__name__)


def open_batches() -> int:
    return EmbeddingBatch.objects.filter(collected_at__isnull=True).count()


def tick(
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    progress: BackfillProgress,
) -> bool:
    """One pass over the open batches; False if another process holds the tick."""
    with connection.cursor() as cursor:
        cursor.execute(BATCH_TICK_LOCK)
        if not cursor.fetchone()[0]:
            return False
    try:
        refresh_open(client)
        for batch in collectable():
            Collector(batch, client, cache, config).collect(progress)
        submit_ready(client, cache, config, progress)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(BATCH_TICK_UNLOCK)
    return True


def execute_batch_job(
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    *,
    options: BackfillOptions | None,
    wait: bool,
    trigger: str,
    stop: threading.Event | None = None,
    on_progress: Callable[[BackfillProgress], None] | None = None,
) -> tuple[BackfillProgress, BackfillRun]:
    """Queue `options`' selection (if given), tick, and with `wait` tick every
    EMBEDDING_BATCH_POLL_SECONDS until no batch is open; recorded as one BackfillRun."""
    stop = stop or threading.Event()
    settle_dead_runs()
    lease = RunLease()
    run = BackfillRun.objects.create(
        pk=lease.run_id,
        trigger=trigger,
        options={**(jsonable_options(options) if options else {}), "batch_api": True},
        model=config.model,
        dimensions=config.dimensions,
    )
    recorder = RunRecorder(run, config, batch=True)
    progress = BackfillProgress()
    report = on_progress or (lambda progress: None)
    try:
        if options is not None:
            progress.total = queue_selection(
                options.selection, config, limit=options.limit, run_id=run.pk
            )
        while True:
            _tick_once(client, cache, config, progress, retry_later=wait)
            recorder.progress(progress)
            report(progress)
            if not wait or progress.fatal is not None or not open_batches():
                break
            if stop.wait(config.batch_poll_seconds):
                progress.interrupted = True
                break
    finally:
        lease.close()
    progress.total = max(progress.total, progress.done)
    progress.finished = time.monotonic()
    recorder.finish(progress)
    return progress, run


def _tick_once(
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    progress: BackfillProgress,
    *,
    retry_later: bool,
) -> None:
    """A tick whose API trouble is told apart: a passing one waits for the next tick (when
    there is one), one no retry can fix stops the job; the batches stay recorded either way,
    for the schedule or a later run to go on with."""
    try:
        tick(client, cache, config, progress)
    except RetryableError as err:
        if not retry_later:
            progress.fatal = RunAborted(
                f"the Batch API did not answer ({err}); what is queued is kept: the schedule or "
                "`backfill_embeddings --batch-api --wait` sends and collects it"
            )
            return
        logger.warning("the Batch API did not answer this tick (%s); trying again next tick", err)
        progress.stats.retries += 1
    except EmbeddingError as err:
        progress.fatal = err
