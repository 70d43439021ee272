"""django-q2 tasks: the scheduled run for new clips, and one range of an enqueued backfill.

Both are thin doors into `runs.execute_backfill`; claims keep overlapping runs (a slow
scheduled run and the next one, many workers on many machines) from paying for a clip twice,
and every worker shares the Redis rate limiter and cache.
"""

import logging
import uuid
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from embeddings.claims import Selection
from embeddings.conf import embedding_settings
from embeddings.pipeline import BackfillOptions
from embeddings.runs import execute_backfill
from embeddings.service import build_embedding_service

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "embed-new-clips"


def _run(options: BackfillOptions, trigger: str) -> dict:
    config = embedding_settings()
    service = build_embedding_service(config)
    try:
        progress, run = execute_backfill(service, options, config, trigger=trigger)
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


def embed_new_clips() -> dict | None:
    """The scheduled run: recent live clips lacking a current vector, at most the limit."""
    config = embedding_settings()
    if not config.enabled:
        logger.info("EMBEDDING_ENABLED is false: the scheduled run does nothing")
        return None
    selection = Selection(
        model=config.model,
        dimensions=config.dimensions,
        created_after=timezone.now() - timedelta(days=config.schedule_lookback_days),
    )
    options = BackfillOptions(selection=selection, limit=config.schedule_limit)
    return _run(options, trigger="schedule")


def embed_clip_range(
    min_id: int, max_id: int, *, force: bool = False, batch_size: int = 50
) -> dict:
    """One chunk of an enqueued backfill: the selected clips with min_id <= id <= max_id."""
    config = embedding_settings()
    selection = Selection(
        model=config.model,
        dimensions=config.dimensions,
        force=force,
        min_id=min_id,
        max_id=max_id,
    )
    return _run(BackfillOptions(selection=selection, batch_size=batch_size), trigger="task")


def embed_clip_ids(ids: list[int], *, batch_size: int = 50) -> dict | None:
    """One chunk of clips picked by hand (the admin's action): embed them whatever their state."""
    config = embedding_settings()
    if not config.enabled:
        logger.info("EMBEDDING_ENABLED is false: the queued admin task does nothing")
        return None
    selection = Selection(
        model=config.model, dimensions=config.dimensions, force=True, ids=tuple(ids)
    )
    return _run(BackfillOptions(selection=selection, batch_size=batch_size), trigger="admin")


def enqueue_clip_ids(ids: list[int], *, chunk: int = 500) -> tuple[str, int]:
    """Queue `embed_clip_ids` tasks of at most `chunk` ids as one django-q2 group; return
    (group id, task count). Small task arguments keep the broker's messages small."""
    from django_q.tasks import async_task

    group = f"admin-embed-{uuid.uuid4().hex[:12]}"
    tasks = 0
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        async_task(
            "embeddings.tasks.embed_clip_ids",
            part,
            group=group,
            task_name=f"{group}-{part[0]}-{part[-1]}",
        )
        tasks += 1
    return group, tasks
