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

Which vectors: the served version's (`queryset.served_settings()`), read from the database at
every search, so a process started with other settings follows a switch. The query is embedded
by that version, then compared under a shared advisory lock that the switch's swaps take
exclusively: if the served version changed in between, the query is embedded again. So a query
is never embedded by one version and compared with the vectors of another.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from django.db import connections, transaction
from django.db.models import Model, QuerySet, Subquery
from pgvector.django import CosineDistance

from embeddings.app_settings import MAX_EF_SEARCH, EmbeddingSettings
from embeddings.exceptions import SearchError
from embeddings.search.checks import check_ef_search, check_k, check_query_text, check_vector
from embeddings.service.embedding_service import EmbeddingService
from embeddings.service.factory import build_embedding_service

LOW_COVERAGE = 0.5  # below this fraction of live clips searchable, callers should warn


# Set LOCAL (the third argument): they end with the search's transaction, never leaking to
# other queries on the connection. ef_search below k would cap the candidates, so k raises it.
# Seq scans off: the planner never counts the cost of detoasting vectors (stored out of line),
# so up to tens of thousands of clips it prefers reading every vector to walking the index;
# with the iterative scan the index answers filtered queries at every size.
# No parallel workers: hybrid search keeps the first text matches in page order (see
# `embeddings.search.statement`), and workers would interleave the pages.
SEARCH_SETTINGS_SQL = (
    "SELECT set_config('hnsw.ef_search', %s, true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('enable_seqscan', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


# The served version changes only while this lock is held exclusively (`embeddings.backfill.
# switch`); every search holds it shared from its version check to its last row.
SERVING_LOCK = (0x73727665, 0)  # "srve"
HOLD_SERVING_SHARED = "SELECT pg_advisory_xact_lock_shared(%s, %s)"
HOLD_SERVING_EXCLUSIVE = "SELECT pg_advisory_xact_lock(%s, %s)"
T = TypeVar("T")
V = TypeVar("V")


def served_search(
    queryset: QuerySet,
    config: EmbeddingSettings | None,
    embed: Callable[[EmbeddingSettings], V],
    search: Callable[[EmbeddingSettings, V], T],
) -> T:
    """`search(config, embed(config))` with the served version (or the `config` given), the
    search inside a transaction in which that version stays served."""
    while True:
        version = config or queryset.served_settings()
        query = embed(version)
        with transaction.atomic(using=queryset.db):
            with connections[queryset.db].cursor() as cursor:
                cursor.execute(HOLD_SERVING_SHARED, SERVING_LOCK)
            if config is None:
                now = queryset.served_settings()
                if (now.version_id, now.source) != (version.version_id, version.source):
                    continue  # a swap came between embedding and comparing: embed again
            return search(version, query)


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
    return SearchCoverage(
        live=queryset.live().count(), searchable=queryset.searchable(config).count()
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
    check_k(k)
    exclude_pk = text_or_clip.pk if isinstance(text_or_clip, queryset.model) else None
    if exclude_pk is None:
        check_query_text(text_or_clip)

    def search(version: EmbeddingSettings, vector: np.ndarray) -> list:
        ef = version.search_ef if ef_search is None else ef_search
        return nearest_clips(
            queryset, vector, k, config=version, ef_search=ef, exclude_pk=exclude_pk
        )

    return served_search(
        queryset,
        config,
        lambda version: query_vector(queryset, text_or_clip, exclude_pk, version, service),
        search,
    )


def query_vector(
    queryset: QuerySet,
    text_or_clip: "str | Model",
    exclude_pk: int | None,
    config: EmbeddingSettings,
    service: EmbeddingService | None,
) -> np.ndarray:
    """A clip's stored current vector, else the embedding of its text (or of the query text),
    through the cached service."""
    if exclude_pk is None:
        return embed_query(text_or_clip, config, service)
    vector = stored_vector(queryset, exclude_pk, config)
    if vector is None:
        texts = queryset.model.objects.with_text().values_list("text", flat=True)
        vector = embed_query(texts.get(pk=exclude_pk) or "", config, service)
    return vector


def similar_clips(clip: Model, k: int = 10) -> list:
    """The clip's nearest neighbours for its admin page. Never calls the embedding API (a page
    view must not spend money or wait on it): a clip without a current vector gets []."""
    clips = type(clip).objects.all()

    def search(version: EmbeddingSettings, _: None) -> list:
        this = clips.filter(pk=clip.pk).searchable(version)
        if not this.exists():
            return []
        # The vector stays in PostgreSQL: a scalar subquery is evaluated once, and the index
        # still answers `ORDER BY embedding <=> (SELECT ...)`.
        vector = this.annotate(vector=clips.vector_expression(version)).values("vector")[:1]
        return nearest_clips(
            clips,
            Subquery(vector),
            k,
            config=version,
            ef_search=version.search_ef,
            exclude_pk=clip.pk,
        )

    return served_search(clips, None, lambda version: None, search)


def stored_vector(queryset: QuerySet, clip_id: int, config: EmbeddingSettings) -> np.ndarray | None:
    """The clip's vector if it is current (made from its present text by this version)."""
    stored = (
        queryset.model.objects.filter(pk=clip_id)
        .searchable(config)
        .annotate(vector=queryset.vector_expression(config))
        .values_list("vector", flat=True)
        .first()
    )
    return None if stored is None else np.asarray(stored, dtype=np.float32)


def embed_query(
    text: str, config: EmbeddingSettings, service: EmbeddingService | None = None
) -> np.ndarray:
    if service is not None and service.version != (config.model, config.dimensions):
        service = None  # made for another version than the served one: never mix them
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
    queryset = queryset.searchable(config)
    if exclude_pk is not None:
        queryset = queryset.exclude(pk=exclude_pk)
    return (
        queryset.defer("embedding")
        .annotate(distance=CosineDistance(queryset.vector_expression(config), vector))
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
    check_k(k)
    check_ef_search(ef_search)
    if isinstance(vector, np.ndarray):
        check_vector(vector, config.dimensions)
    with transaction.atomic(using=queryset.db):
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(SEARCH_SETTINGS_SQL, [str(min(max(ef_search, k), MAX_EF_SEARCH))])
        clips = list(search_queryset(queryset, vector, k, config=config, exclude_pk=exclude_pk))
    clips.sort(key=lambda clip: clip.distance)
    return clips
