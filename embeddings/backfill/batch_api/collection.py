"""Finished batches: their answers checked and written, what they left undone sent again.

An answer is believed only after the checks the online path makes (count, `index`, size,
finite values), and written with the same binary writer, which refuses it where the clip's
text changed since submission. A failed line, or the lines an expired or cancelled batch never
ran, move to a new preparing batch (`attempt` + 1) up to `EMBEDDING_MAX_RETRIES` times, then
the clips are recorded as failed. The move and the close of the batch are one transaction: a
collector killed before it re-collects the whole batch (rewriting the same vectors), never
resubmits twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.batch_api.submission import request_clips
from embeddings.backfill.pipeline import CHANGED, BackfillProgress
from embeddings.backfill.writer import EmbeddedClip, record_failures, write_embeddings
from embeddings.exceptions import Failure, FailureKind, InputRejected
from embeddings.models import Clip, EmbeddingBatch
from embeddings.providers.batch_shapes import FINISHED_STATUSES, OPEN_STATUSES, LineAnswer
from embeddings.providers.tokens import truncate_to_tokens
from embeddings.service.cache import EmbeddingCache

if TYPE_CHECKING:  # the client pulls in openai: see providers/batch_shapes.py
    from embeddings.providers.openai_batch import OpenAIBatchClient

logger = logging.getLogger(__name__)


def refresh_open(client: OpenAIBatchClient) -> None:
    """Bring each submitted, unfinished batch's status from the API."""
    for batch in EmbeddingBatch.objects.filter(
        collected_at__isnull=True, status__in=OPEN_STATUSES, batch_id__isnull=False
    ):
        remote = client.retrieve(batch.batch_id)
        if remote.status == batch.status:
            continue
        batch.status = remote.status
        batch.output_file_id = remote.output_file_id
        batch.error_file_id = remote.error_file_id
        batch.error = remote.errors
        if remote.status in FINISHED_STATUSES:
            batch.finished_at = timezone.now()
        batch.save(
            update_fields=["status", "output_file_id", "error_file_id", "error", "finished_at"]
        )


def collectable() -> list[EmbeddingBatch]:
    return list(
        EmbeddingBatch.objects.filter(
            collected_at__isnull=True, status__in=FINISHED_STATUSES
        ).order_by("id")
    )


class Collector:
    """Collects one finished batch."""

    def __init__(
        self,
        batch: EmbeddingBatch,
        client: OpenAIBatchClient,
        cache: EmbeddingCache | None,
        config: EmbeddingSettings,
    ) -> None:
        self.batch = batch
        self.client = client
        self.cache = cache
        self.config = config
        self.held = dict(batch.items.values_list("clip_id", "text_hash"))
        self.ids = sorted(self.held)
        self.answered: set[int] = set()
        self.leftover: dict[int, str] = {}
        self.rejected: dict[int, str] = {}
        self.processed = self.skipped = 0
        # A switch may have made another version the served one while the batch was out:
        # its answers then describe vectors nobody searches, so they are dropped and the
        # clips, freed, are embedded for the served version like any other.
        self.serves = config.source == "clips" and (batch.model, batch.dimensions) == (
            config.model,
            config.dimensions,
        )

    def collect(self, progress: BackfillProgress) -> None:
        batch = self.batch
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for answer in self.client.answers(file_id, self._inputs_of):
                    self._take(answer, progress)
        not_run = f"batch {batch.status} before this request ran"
        if batch.error:
            not_run += f": {batch.error}"
        for clip_id in self.ids:
            if clip_id not in self.answered:
                self.leftover.setdefault(clip_id, not_run)
        self._close(progress)

    def _inputs_of(self, custom_id: str) -> int | None:
        clips = request_clips(custom_id, self.batch.pk, self.ids)
        return len(clips) if clips else None

    def _take(self, answer: LineAnswer, progress: BackfillProgress) -> None:
        clips = request_clips(answer.custom_id, self.batch.pk, self.ids) or []
        if answer.vectors is None:
            error = answer.error
            reason = str(error)
            if isinstance(error, InputRejected) and error.index is not None:
                refused = clips[error.index]
                self.rejected[refused] = str(Failure.of(FailureKind.REJECTED, reason))
                self.answered.add(refused)
            for clip_id in clips:
                if clip_id not in self.answered:
                    self.leftover[clip_id] = reason
            return
        self.answered.update(clips)
        progress.stats.tokens += answer.tokens
        progress.stats.requests += 1
        progress.stats.inputs += len(clips)
        if not self.serves:
            self.skipped += len(clips)
            progress.skipped += len(clips)
            progress.reasons.update([str(Failure.of(FailureKind.VERSION_CHANGED))] * len(clips))
            return
        embedded = [
            EmbeddedClip(clip_id, self.held[clip_id], vector)
            for clip_id, vector in zip(clips, answer.vectors, strict=True)
        ]
        self._fill_cache(embedded)
        batch = self.batch
        written = write_embeddings(
            embedded, model=batch.model, dimensions=batch.dimensions, run_id=None
        )
        changed = len(embedded) - len(written)
        self.processed += len(written)
        self.skipped += changed
        progress.processed += len(written)
        progress.skipped += changed
        progress.reasons.update([str(CHANGED)] * changed)

    def _fill_cache(self, embedded: list[EmbeddedClip]) -> None:
        """Cache each answer under the text it was made from: the clip's present text when
        its hash is still the one sent (else that text is gone and nothing is cached)."""
        if self.cache is None:
            return
        hashes = {clip.id: clip for clip in embedded}
        rows = Clip.objects.with_text().filter(id__in=list(hashes))
        vectors = {}
        for clip_id, text, text_hash in rows.values_list("id", "text", "text_hash_now"):
            if text_hash == hashes[clip_id].text_hash:
                sent = truncate_to_tokens(text, self.config.max_tokens_per_input)
                vectors[sent] = hashes[clip_id].vector
        self.cache.set_many(vectors)

    def _close(self, progress: BackfillProgress) -> None:
        """Resubmit or fail what is left, and close the batch: one transaction."""
        batch = self.batch
        retry = batch.attempt <= self.config.max_retries and self.serves
        with transaction.atomic():
            locked = EmbeddingBatch.objects.select_for_update().get(pk=batch.pk)
            if locked.collected_at is not None:
                return  # another collector closed it meanwhile
            again = list(self.leftover) if retry else []
            if again:
                share = batch.tokens * len(again) // max(1, batch.clips)
                follow = EmbeddingBatch.objects.create(
                    run_id=batch.run_id,
                    model=batch.model,
                    dimensions=batch.dimensions,
                    attempt=batch.attempt + 1,
                    clips=len(again),
                    tokens=max(share, len(again)),
                )
                batch.items.filter(clip_id__in=again).update(batch=follow)
            gave_up = self._gave_up() if self.serves and not retry else {}
            failures = {**gave_up, **self.rejected}
            record_failures(failures, run_id=None)
            batch.items.all().delete()
            batch.processed += self.processed
            batch.skipped += self.skipped
            batch.failed += len(failures)
            batch.resubmitted = len(again)
            batch.collected_at = timezone.now()
            batch.save()
        progress.failed += len(failures)
        progress.reasons.update(failures.values())
        logger.info(
            "collected batch %s: %d written, %d resubmitted, %d failed",
            batch.batch_id,
            self.processed,
            len(again),
            len(failures),
        )

    def _gave_up(self) -> dict[int, str]:
        tries = self.batch.attempt
        return {
            clip_id: str(Failure(FailureKind.GAVE_UP, f"gave up after {tries} batches: {reason}"))
            for clip_id, reason in self.leftover.items()
        }
