"""Claiming the selection into `preparing` batches: held in the database, not yet sent."""

from dataclasses import dataclass

from django.db import connection, transaction

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.claims import ClaimedClip, claim_next, release
from embeddings.backfill.selection import Selection
from embeddings.models import EmbeddingBatch, EmbeddingBatchClip
from embeddings.providers.batch_shapes import MAX_BATCH_INPUTS, MAX_FILE_BYTES
from embeddings.providers.tokens import estimate_tokens

CLAIM_WINDOW = 10_000
# A request line's JSON around its texts, and a margin under the file cap for escapes.
LINE_OVERHEAD_BYTES = 200
FILE_BYTES_BUDGET = int(MAX_FILE_BYTES * 0.9)


@dataclass(frozen=True)
class BatchCaps:
    """What one batch may hold: the API's input and file caps, and the whole queue limit
    (a batch larger than the queue could never be enqueued)."""

    inputs: int = MAX_BATCH_INPUTS
    tokens: int = 3_000_000
    file_bytes: int = FILE_BYTES_BUDGET

    @classmethod
    def from_settings(cls, config: EmbeddingSettings) -> "BatchCaps":
        return cls(tokens=config.batch_queue_tokens)


def queue_selection(
    selection: Selection, config: EmbeddingSettings, *, limit: int | None, run_id: int
) -> int:
    """Hold every selected clip (at most `limit`) in preparing batches; return how many.

    Claims keep other runs off the clips while they are read; each full batch is written in
    one transaction with the release of its claims, so a clip is never free in between.
    """
    caps = BatchCaps.from_settings(config)
    held: list[ClaimedClip] = []
    tokens = size = 0
    cursor, taken = None, 0
    while limit is None or taken < limit:
        window = CLAIM_WINDOW if limit is None else min(CLAIM_WINDOW, limit - taken)
        clips, next_cursor, _ = claim_next(selection, after_id=cursor, limit=window, run_id=run_id)
        if next_cursor is None:
            break
        cursor = next_cursor
        taken += len(clips)
        for clip in clips:
            clip_tokens = estimate_tokens(clip.text)
            clip_bytes = len(clip.text.encode("utf-8")) + 8
            full = len(held) >= caps.inputs or tokens + clip_tokens > caps.tokens
            if held and (full or size + clip_bytes > caps.file_bytes):
                hold(held, tokens, config, run_id=run_id)
                held, tokens, size = [], 0, 0
            held.append(clip)
            tokens += clip_tokens
            size += clip_bytes
    if held:
        hold(held, tokens, config, run_id=run_id)
    return taken


def hold(
    clips: list[ClaimedClip], tokens: int, config: EmbeddingSettings, *, run_id: int
) -> EmbeddingBatch:
    """A preparing batch holding `clips` with their texts' hashes; their claims freed."""
    with transaction.atomic():
        batch = EmbeddingBatch.objects.create(
            run_id=run_id,
            model=config.model,
            dimensions=config.dimensions,
            clips=len(clips),
            tokens=tokens,
        )
        EmbeddingBatchClip.objects.bulk_create(
            (EmbeddingBatchClip(batch=batch, clip_id=c.id, text_hash=c.text_hash) for c in clips),
            batch_size=5000,
        )
        with connection.cursor() as cursor:
            release([clip.id for clip in clips], run_id, cursor=cursor)
    return batch
