"""django-q2 tasks and the schedule: thin doors into `backfill.runs.execute_backfill`.

Claims keep overlapping runs (a slow scheduled run and the next one, many workers on many
machines) from paying for a clip twice, and every worker shares the Redis rate limiter and
cache. Task arguments are small (id ranges, id lists), so broker messages stay small.
"""

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from embeddings import live_sync
from embeddings.app_settings import EmbeddingSettings, embedding_settings
from embeddings.backfill.batch_api.jobs import execute_batch_job, open_batches
from embeddings.backfill.pipeline import BackfillOptions, Follow
from embeddings.backfill.runs import execute_backfill
from embeddings.backfill.selection import Selection, id_ranges
from embeddings.models import Clip, served_settings
from embeddings.service.factory import (
    build_batch_client,
    build_embedding_cache,
    build_embedding_service,
)

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "embed-new-clips"
SCHEDULED_FUNC = "embeddings.tasks.embed_new_clips"
SWEEP_NAME = "embed-written-clips"
SWEEP_FUNC = "embeddings.tasks.sweep_written_clips"
BATCH_POLL_NAME = "collect-batches"
BATCH_POLL_FUNC = "embeddings.tasks.collect_batches"
RANGE_FUNC = "embeddings.tasks.embed_clip_range"
IDS_FUNC = "embeddings.tasks.embed_clip_ids"


def register_schedule(config: EmbeddingSettings) -> None:
    """Create or update the schedules by name, so each `migrate` keeps them in step with the
    settings (Schedule.name is not unique and `schedule()` would add a duplicate). The sweep
    exists while live sync is on."""
    from django_q.models import Schedule

    schedules = {
        SCHEDULE_NAME: (SCHEDULED_FUNC, config.schedule_minutes),
        BATCH_POLL_NAME: (BATCH_POLL_FUNC, config.batch_poll_minutes),
    }
    if config.live_sync:
        schedules[SWEEP_NAME] = (SWEEP_FUNC, config.sweep_minutes)
    else:
        Schedule.objects.filter(name=SWEEP_NAME).delete()
    for name, (func, minutes) in schedules.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )


def _run(
    options: BackfillOptions, trigger: str, *, only_if_enabled: bool = True, on_poll=None
) -> dict | None:
    config = served_settings()
    if only_if_enabled and not config.enabled:
        logger.info("EMBEDDING_ENABLED is false: the %s run does nothing", trigger)
        return None
    service = build_embedding_service(config)
    try:
        progress, run = execute_backfill(service, options, config, trigger=trigger, on_poll=on_poll)
    finally:
        service.close()
        connection.close()
    if progress.fatal is not None:
        raise RuntimeError(str(progress.fatal))  # a failed task, visible in the django-q admin
    return {
        "run_id": run.pk if run else None,
        "processed": progress.processed,
        "skipped": progress.skipped,
        "failed": progress.failed,
    }


def _selection(**narrowing) -> Selection:
    return Selection.of(served_settings(), **narrowing)


def embed_new_clips() -> dict | None:
    """The scheduled run: recent live clips lacking a current vector, at most the limit."""
    config = embedding_settings()
    since = timezone.now() - timedelta(days=config.schedule_lookback_days)
    options = BackfillOptions(
        selection=_selection(created_after=since), limit=config.schedule_limit
    )
    return _run(options, trigger="schedule")


def sync_live_clips() -> dict | None:
    """Live sync's loop, queued by a save's commit (`embeddings.live_sync`): one run that
    follows the stream of new and edited clips until it goes quiet."""
    config = embedding_settings()
    if not config.live_sync:
        return None
    follow = Follow(gather_seconds=config.live_sync_gather_seconds)
    options = BackfillOptions(selection=_selection(new_or_edited=True), follow=follow)
    while True:
        result = _run(options, trigger="live", on_poll=live_sync.keep_loop_marked)
        live_sync.unmark_loop()
        # A clip saved while this loop was deciding to end found it still marked: look once
        # more, and go on unless a save since then has queued a new loop.
        if result is None or not Clip.objects.awaiting_vector_ids(after_id=None, limit=1).exists():
            return result
        if not live_sync.mark_loop():
            return result


def sweep_written_clips() -> dict | None:
    """Every EMBEDDING_SWEEP_MINUTES: clips written any other way (raw SQL, another service)
    or whose nudge was lost. The same selection as live sync, in one pass."""
    if not embedding_settings().live_sync:
        return None
    return _run(BackfillOptions(selection=_selection(new_or_edited=True)), trigger="sweep")


def collect_batches() -> dict | None:
    """Every EMBEDDING_BATCH_POLL_MINUTES: collect finished Batch API jobs, resubmit what they
    left, send queued ones as the limit allows; nobody has to wait at a terminal. Does
    nothing (and records no run) while no batch is open."""
    if not open_batches():
        return None
    config = served_settings()
    progress, run = execute_batch_job(
        build_batch_client(config),
        build_embedding_cache(config),
        config,
        options=None,
        wait=False,
        trigger="batch",
    )
    connection.close()
    if progress.fatal is not None:
        raise RuntimeError(str(progress.fatal))
    return {
        "run_id": run.pk,
        "processed": progress.processed,
        "skipped": progress.skipped,
        "failed": progress.failed,
    }


def embed_clip_range(
    min_id: int,
    max_id: int,
    *,
    force: bool = False,
    batch_size: int = 50,
    created_after: datetime | None = None,
) -> dict | None:
    """One chunk of an enqueued backfill: the selected clips with min_id <= id <= max_id
    (created at or after `created_after`, the command's `--since`, when given)."""
    selection = _selection(force=force, min_id=min_id, max_id=max_id, created_after=created_after)
    options = BackfillOptions(selection=selection, batch_size=batch_size)
    # Queued by the command, which warns about EMBEDDING_ENABLED=false and proceeds.
    return _run(options, trigger="task", only_if_enabled=False)


def embed_clip_ids(ids: list[int], *, batch_size: int = 50) -> dict | None:
    """One chunk of clips picked by hand (the admin's action): embed them whatever their state."""
    selection = _selection(force=True, ids=tuple(ids))
    return _run(BackfillOptions(selection=selection, batch_size=batch_size), trigger="admin")


def enqueue(
    func: str, calls: Iterable[tuple[str, tuple, dict]], *, group_prefix: str
) -> tuple[str, int]:
    """Queue one task of `func` per (name, args, kwargs) as one django-q2 group; return
    (group id, task count)."""
    from django_q.tasks import async_task

    group = f"{group_prefix}-{uuid.uuid4().hex[:12]}"
    tasks = 0
    for name, args, kwargs in calls:
        async_task(func, *args, **kwargs, group=group, task_name=f"{group}-{name}")
        tasks += 1
    return group, tasks


def enqueue_backfill(selection: Selection, *, chunk: int, batch_size: int) -> tuple[str, int]:
    """The `--enqueue` fan-out: one `embed_clip_range` task per range of `chunk` clips, each
    narrowed as the selection is (a range also holds clips the selection left out)."""
    narrowing = {
        "force": selection.force,
        "batch_size": batch_size,
        "created_after": selection.created_after,
    }
    calls = ((f"{low}-{high}", (low, high), narrowing) for low, high in id_ranges(selection, chunk))
    return enqueue(RANGE_FUNC, calls, group_prefix="backfill")


def enqueue_clip_ids(ids: list[int], *, chunk: int = 500) -> tuple[str, int]:
    """The admin's fan-out: one `embed_clip_ids` task per `chunk` ids."""
    parts = (list(ids[start : start + chunk]) for start in range(0, len(ids), chunk))
    calls = ((f"{part[0]}-{part[-1]}", (part,), {}) for part in parts)
    return enqueue(IDS_FUNC, calls, group_prefix="admin-embed")
