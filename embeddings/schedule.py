"""Registering the django-q2 schedule, and splitting a backfill into queued tasks."""

import uuid
from collections.abc import Iterator

from embeddings.claims import Selection
from embeddings.conf import EmbeddingSettings

TASK_FUNC = "embeddings.tasks.embed_clip_range"
SCHEDULED_FUNC = "embeddings.tasks.embed_new_clips"


def register_schedule(config: EmbeddingSettings) -> None:
    """Create or update the schedule by name, so each `migrate` keeps it in step with the
    settings (Schedule.name is not unique and `schedule()` would add a duplicate)."""
    from django_q.models import Schedule

    from embeddings.tasks import SCHEDULE_NAME

    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": SCHEDULED_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": config.schedule_minutes,
            "repeats": -1,
        },
    )


def id_ranges(selection: Selection, chunk: int) -> Iterator[tuple[int, int]]:
    """(min_id, max_id) ranges of about `chunk` selected clips each, streamed in key order."""
    ids = selection.queryset().order_by("id").values_list("id", flat=True)
    first = last = None
    count = 0
    for clip_id in ids.iterator(chunk_size=10_000):
        if first is None:
            first = clip_id
        last = clip_id
        count += 1
        if count == chunk:
            yield first, last
            first, count = None, 0
    if first is not None:
        yield first, last


def enqueue_backfill(selection: Selection, *, chunk: int, batch_size: int) -> tuple[str, int]:
    """Queue one task per id range as a django-q2 group; return (group id, task count)."""
    from django_q.tasks import async_task

    group = f"backfill-{uuid.uuid4().hex[:12]}"
    tasks = 0
    for min_id, max_id in id_ranges(selection, chunk):
        async_task(
            TASK_FUNC,
            min_id,
            max_id,
            force=selection.force,
            batch_size=batch_size,
            group=group,
            task_name=f"{group}-{min_id}-{max_id}",
        )
        tasks += 1
    return group, tasks
