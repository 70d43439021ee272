"""Semantic search: the live clips nearest to a text or to a clip, through the HNSW index.

A query text is embedded by the backfill's service (same cache, same rate limiter), so a
repeated query costs no API call. The SQL is the one shape the index answers,
`ORDER BY embedding <=> q LIMIT k`; "live" and "current" are checked on the rows the index
yields, and pgvector's iterative scan (`relaxed_order`) keeps walking the graph until k rows
pass them (up to pgvector's `hnsw.max_scan_tuples`, 20,000 by default: a filter that almost
no row passes can return fewer than k). Relaxed order may return rows slightly out of order,
so they are re-sorted here. Needs pgvector 0.8 or later (iterative scans).
A clip without a current vector is never a match: any vector it holds describes other text.
This module works on whatever Clip queryset it is given and never imports the models:
`Clip.objects.similar_to` is a facade over `search_clips`.
"""

from dataclasses import dataclass

import numpy as np
from django.db import connections, transaction
from django.db.models import Model, QuerySet, Subquery
from pgvector.django import CosineDistance

from embeddings.app_settings import MAX_EF_SEARCH, EmbeddingSettings, embedding_settings
from embeddings.exceptions import InvalidSearch, SearchError
from embeddings.service.embedding_service import EmbeddingService
from embeddings.service.factory import build_embedding_service

MAX_K = 1000
LOW_COVERAGE = 0.5  # below this fraction of live clips searchable, callers should warn


# Set LOCAL (the third argument): they end with the search's transaction, never leaking to
# other queries on the connection. ef_search below k would cap the candidates, so k raises it.
# Seq scans off: the planner never counts the cost of detoasting vectors (stored out of line),
# so up to tens of thousands of clips it prefers reading every vector to walking the index;
# with the iterative scan the index answers filtered queries at every size.
SEARCH_SETTINGS_SQL = (
    "SELECT set_config('hnsw.ef_search', %s, true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('enable_seqscan', 'off', true)"
)


@dataclass(frozen=True)
class SearchCoverage:
    """How much of the catalogue a search can find: live clips holding a current vector."""

    live: int
    searchable: int

    @property
    def fraction(self) -> float:
        return self.searchable / self.live if self.live else 1.0

    @property
    def low(self) -> bool:
        return self.live > 0 and self.fraction < LOW_COVERAGE


def search_coverage(queryset: QuerySet, config: EmbeddingSettings) -> SearchCoverage:
    live = queryset.live()
    return SearchCoverage(
        live=live.count(), searchable=live.current(config.model, config.dimensions).count()
    )


def search_clips(
    queryset: QuerySet,
    text_or_clip: "str | Model",
    k: int = 10,
    *,
    ef_search: int | None = None,
    service: EmbeddingService | None = None,
    config: EmbeddingSettings | None = None,
) -> list:
    """Nearest clips of `queryset` (its own filters become post-filters too) to a text, or to
    a clip (itself excluded). A clip's stored current vector is used as is; a clip without
    one, like a text, is embedded through `service` (built from settings, and closed, if None).
    """
    config = config or embedding_settings()
    _check_k(k)
    exclude_pk = None
    if isinstance(text_or_clip, queryset.model):
        exclude_pk = text_or_clip.pk
        vector = stored_vector(queryset, exclude_pk, config)
        if vector is None:
            text = queryset.model.objects.with_text().values_list("text", flat=True)
            vector = embed_query(text.get(pk=exclude_pk) or "", config, service)
    else:
        if not text_or_clip or not text_or_clip.strip():
            raise InvalidSearch("the query text is empty: say what to look for")
        vector = embed_query(text_or_clip, config, service)
    return nearest_clips(
        queryset,
        vector,
        k,
        config=config,
        ef_search=config.search_ef if ef_search is None else ef_search,
        exclude_pk=exclude_pk,
    )


def similar_clips(clip: Model, k: int = 10) -> list:
    """The clip's nearest neighbours for its admin page. Never calls the embedding API (a page
    view must not spend money or wait on it): a clip without a current vector gets []."""
    config = embedding_settings()
    clips = type(clip).objects
    this = clips.filter(pk=clip.pk)
    if not this.current(config.model, config.dimensions).exists():
        return []
    # The vector stays in PostgreSQL: a scalar subquery is evaluated once, and the index
    # still answers `ORDER BY embedding <=> (SELECT ...)`.
    vector = Subquery(this.values("embedding")[:1])
    return nearest_clips(
        clips.all(), vector, k, config=config, ef_search=config.search_ef, exclude_pk=clip.pk
    )


def stored_vector(queryset: QuerySet, clip_id: int, config: EmbeddingSettings) -> np.ndarray | None:
    """The clip's vector if it is current (made from its present text by this model)."""
    stored = (
        queryset.model.objects.filter(pk=clip_id)
        .current(config.model, config.dimensions)
        .values_list("embedding", flat=True)
        .first()
    )
    return None if stored is None else np.asarray(stored, dtype=np.float32)


def embed_query(
    text: str, config: EmbeddingSettings, service: EmbeddingService | None = None
) -> np.ndarray:
    own_service = service is None
    if own_service:
        service = build_embedding_service(config, concurrency=1)
    try:
        result = service.embed([text])
    finally:
        if own_service:
            service.close()
    vector = result.vectors[0]
    if vector is None:
        raise SearchError(f"the query could not be embedded: {result.errors[0]}")
    return vector


def search_queryset(
    queryset: QuerySet,
    vector: np.ndarray | Subquery,
    k: int,
    *,
    config: EmbeddingSettings,
    exclude_pk: int | None = None,
) -> QuerySet:
    """The search SQL, lazy (for EXPLAIN): ORDER BY the distance alone, then LIMIT, which is
    what lets the planner walk the HNSW index. A second sort key would turn it off."""
    queryset = queryset.live().current(config.model, config.dimensions)
    if exclude_pk is not None:
        queryset = queryset.exclude(pk=exclude_pk)
    return (
        queryset.defer("embedding")
        .annotate(distance=CosineDistance("embedding", vector))
        .order_by("distance")[:k]
    )


def nearest_clips(
    queryset: QuerySet,
    vector: np.ndarray | Subquery,
    k: int,
    *,
    config: EmbeddingSettings,
    ef_search: int,
    exclude_pk: int | None = None,
) -> list:
    _check_k(k)
    if not 1 <= ef_search <= MAX_EF_SEARCH:
        raise InvalidSearch(
            f"ef_search (EMBEDDING_SEARCH_EF) must be between 1 and {MAX_EF_SEARCH}, "
            f"not {ef_search}"
        )
    if isinstance(vector, np.ndarray) and len(vector) != config.dimensions:
        raise InvalidSearch(
            f"the query vector has {len(vector)} dimensions, the clips {config.dimensions}"
        )
    with transaction.atomic(using=queryset.db):
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(SEARCH_SETTINGS_SQL, [str(min(max(ef_search, k), MAX_EF_SEARCH))])
        clips = list(search_queryset(queryset, vector, k, config=config, exclude_pk=exclude_pk))
    clips.sort(key=lambda clip: clip.distance)
    return clips


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise InvalidSearch(f"k must be between 1 and {MAX_K}, not {k}")
