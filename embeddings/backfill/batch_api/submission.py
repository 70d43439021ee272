"""Sending preparing batches: request file, upload, create, inside the enqueued-token limit.

Each step is stored before the next: the file id before the batch is created, so a process
killed after the create finds its batch by the row id in the batch's metadata instead of
creating a second one. The request file is written from the clips' present text (an edit
since they were queued is sent, not the old text); answers the cache holds are written at
once and never sent.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.pipeline import BackfillProgress
from embeddings.backfill.writer import EmbeddedClip, record_failures, write_embeddings
from embeddings.exceptions import Failure, FailureKind
from embeddings.models import Clip, EmbeddingBatch
from embeddings.providers.batch_shapes import OPEN_STATUSES, RemoteBatch
from embeddings.providers.tokens import estimate_tokens, truncate_to_tokens
from embeddings.service.cache import EmbeddingCache
from embeddings.service.packing import pack_requests
from embeddings.site_table.fields import clip_key

if TYPE_CHECKING:  # the client pulls in openai: see providers/batch_shapes.py
    from embeddings.providers.openai_batch import OpenAIBatchClient

logger = logging.getLogger(__name__)

BLANK = Failure.of(FailureKind.BLANK)
FIND_MARGIN_SECONDS = 300  # clock skew between this machine and the API's timestamps


def enqueued_tokens() -> int:
    """Tokens of the batches the API holds now: what counts against its queue limit."""
    open_ = EmbeddingBatch.objects.filter(collected_at__isnull=True, status__in=OPEN_STATUSES)
    return open_.aggregate(tokens=Sum("tokens"))["tokens"] or 0


def submit_ready(
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    progress: BackfillProgress,
) -> int:
    """Send preparing batches, oldest first, while the queue has room; return how many went.
    The first always goes when nothing is enqueued (a batch is never larger than the limit)."""
    queued = enqueued_tokens()
    sent = 0
    for batch in EmbeddingBatch.objects.filter(
        collected_at__isnull=True, status=EmbeddingBatch.PREPARING
    ).order_by("id"):
        if queued and queued + batch.tokens > config.batch_queue_tokens:
            break
        if submit(batch, client, cache, config, progress):
            queued += batch.tokens
            sent += 1
    return sent


def submit(
    batch: EmbeddingBatch,
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    progress: BackfillProgress,
) -> bool:
    """Upload and create one batch (or adopt the one a crash left unrecorded); False when
    nothing was left to send (all cached, removed or blank: the row is then closed)."""
    if batch.input_file_id:
        created_after = int(batch.created_at.timestamp()) - FIND_MARGIN_SECONDS
        found = client.find(batch.pk, created_after=created_after)
        if found is not None:
            _record_remote(batch, found)
            return True
    else:
        content = request_file(batch, client, cache, config, progress)
        if content is None:
            batch.collected_at = timezone.now()
            batch.save()
            return False
        batch.input_file_id = client.upload(content, f"clip-embeddings-batch-{batch.pk}.jsonl")
        batch.save(update_fields=["input_file_id", "clips", "requests", "tokens"])
    _record_remote(batch, client.create(batch.input_file_id, batch.pk))
    logger.info("submitted batch %s (%d clips)", batch.batch_id, batch.clips)
    return True


def _record_remote(batch: EmbeddingBatch, remote: RemoteBatch) -> None:
    batch.batch_id = remote.id
    batch.status = remote.status
    batch.error = remote.errors
    batch.submitted_at = timezone.now()
    batch.save(update_fields=["batch_id", "status", "error", "submitted_at"])


def request_file(
    batch: EmbeddingBatch,
    client: OpenAIBatchClient,
    cache: EmbeddingCache | None,
    config: EmbeddingSettings,
    progress: BackfillProgress,
) -> bytes | None:
    """The JSONL for the clips `batch` holds, one line per packed request (custom id
    `row:first_clip_id:last_clip_id`); None if none needs sending."""
    held = dict(batch.items.values_list("clip_id", "text_hash"))
    rows = (
        Clip.objects.live()
        .with_text()
        .filter(id__in=batch.items.values("clip_id"))
        .order_by("id")
        .values_list("id", "text", "text_hash_now")
    )
    sendable: list[tuple[int, str, str]] = []
    blank: dict[int, str] = {}
    live = 0
    for clip_id, text, text_hash in rows.iterator(chunk_size=5000):
        live += 1
        if not text or not text.strip():
            blank[clip_id] = str(BLANK)
            continue
        sendable.append((clip_id, truncate_to_tokens(text, config.max_tokens_per_input), text_hash))
    cached = cache.get_many(text for _, text, _ in sendable) if cache else {}
    hits = [EmbeddedClip(i, h, cached[t]) for i, t, h in sendable if t in cached]
    sendable = [row for row in sendable if row[1] not in cached]
    written = write_embeddings(hits, model=batch.model, dimensions=batch.dimensions, run_id=None)
    record_failures(blank, run_id=None)
    progress.processed += len(written)
    # Removed (or deleted) since queued, blank, or edited while the cached answer was written.
    progress.skipped += (len(held) - live) + len(blank) + (len(hits) - len(written))
    progress.stats.cache_hits += len(hits)
    progress.reasons.update([str(BLANK)] * len(blank))

    ids = [clip_id for clip_id, _, _ in sendable]
    changed = [(i, h) for i, _, h in sendable if held[i] != h]
    with transaction.atomic():
        batch.items.exclude(clip_id__in=ids).delete()
        for clip_id, text_hash in changed:
            batch.items.filter(clip_id=clip_id).update(text_hash=text_hash)
    if not sendable:
        return None
    lines = []
    texts = [text for _, text, _ in sendable]
    start = 0
    groups = pack_requests(
        texts, max_inputs=config.max_inputs_per_request, max_tokens=config.max_tokens_per_request
    )
    for group, _tokens in groups:
        first, last = ids[start], ids[start + len(group) - 1]
        lines.append(client.request_line(f"{batch.pk}:{first}:{last}", group))
        start += len(group)
    batch.clips = len(sendable)
    batch.requests = len(lines)
    batch.tokens = sum(estimate_tokens(text) for text in texts)
    return b"".join(lines)


def request_clips(custom_id: str, batch_pk: int, ids: list) -> list | None:
    """The clip ids (in input order) a custom id of `batch_pk` covers; `ids` sorted. None if
    the id is not one of this batch's."""
    try:
        row, first, last = custom_id.split(":")
        row, first, last = int(row), clip_key(first), clip_key(last)
    except ValueError:
        return None
    if row != batch_pk:
        return None
    return ids[bisect_left(ids, first) : bisect_right(ids, last)]
