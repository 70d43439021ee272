"""What a run covers: a value naming the clips, and the queries that walk them in key order."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Exists, OuterRef, QuerySet

from embeddings.app_settings import EmbeddingSettings
from embeddings.models import Clip, EmbeddingBatchClip, text_hash_now


@dataclass(frozen=True)
class Selection:
    """`force` takes every live clip, `new_or_edited` only those live sync serves (no vector,
    or one of other text), else those lacking a current vector; the other fields narrow it
    (command flags, scheduled runs, task ranges, admin). With `version_id` the vectors are
    that version's build rows (a switch, a large run), not `clips.embedding`."""

    model: str
    dimensions: int
    version_id: int | None = None
    force: bool = False
    new_or_edited: bool = False
    created_after: datetime | None = None
    min_id: int | None = None
    max_id: int | None = None
    ids: tuple[int, ...] | None = None

    @classmethod
    def of(cls, config: EmbeddingSettings, **narrowing) -> "Selection":
        """The clips of the version `config` names, where that version keeps its vectors."""
        version_id = config.version_id if config.source == "builds" else None
        return cls(config.model, config.dimensions, version_id=version_id, **narrowing)

    @property
    def narrowed(self) -> bool:
        """Only part of the clips (a date, an id range, chosen ids)."""
        ranges = (self.created_after, self.min_id, self.max_id, self.ids)
        return any(value is not None for value in ranges)

    def queryset(self) -> QuerySet:
        narrowed = self._narrowed()
        if self.force:
            return narrowed.live()
        if self.version_id is not None:  # new or edited is all a build row lacks
            return narrowed.live().unbuilt(self.version_id)
        if self.new_or_edited:
            return narrowed.awaiting_vector()
        return narrowed.pending(self.model, self.dimensions)

    def candidates(self, *, after_id, limit: int) -> QuerySet:
        """The ids of the next `limit` selected clips after `after_id` (None: from the first),
        in key order."""
        if self.new_or_edited and self.version_id is None:
            return self._narrowed().awaiting_vector_ids(after_id=after_id, limit=limit)
        qs = self.queryset() if after_id is None else self.queryset().filter(id__gt=after_id)
        return qs.order_by("id").values("id")[:limit]

    def _narrowed(self) -> QuerySet:
        # A clip an open Batch API job holds with its present text waits for that answer.
        held = EmbeddingBatchClip.objects.filter(
            clip_id=OuterRef("id"), text_hash=OuterRef("text_hash_now")
        )
        qs = Clip.objects.alias(text_hash_now=text_hash_now()).filter(~Exists(held))
        if self.created_after is not None:
            qs = qs.filter(created_at__gte=self.created_after)
        if self.min_id is not None:
            qs = qs.filter(id__gte=self.min_id)
        if self.max_id is not None:
            qs = qs.filter(id__lte=self.max_id)
        if self.ids is not None:
            qs = qs.filter(id__in=self.ids)
        return qs


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
