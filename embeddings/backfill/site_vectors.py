"""A site's own vectors: kept, not bought again, once a small sample agrees with the API.

A site that adopts the tool may hold vectors made by its own backend, labelled in its
`embedding_model` column. Those labelled with the served model (and made from the clip's
present text as far as can be told: `models.site_vector_q`) are checked once: a random sample
of at most 5% of them plus 100 (and never more than SAMPLE_MOST) is embedded through the API
and compared by cosine similarity. If nearly all agree (cosine of at least AGREEMENT), every
one of them counts as current from then on (`SiteTable.vectors_kept`); if not, the run says so
and they are all replaced like vectors of another model or unlabelled ones. The sample's new
vectors are written either way.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.writer import EmbeddedClip, write_embeddings
from embeddings.models import Clip, site_vector_q
from embeddings.service.embedding_service import EmbeddingService
from embeddings.site_table.record import SiteTable

SAMPLE_FLOOR = 100
SAMPLE_SHARE = 0.05
SAMPLE_MOST = 1000
AGREEMENT = 0.99  # cosine similarity of a stored vector and the API's for the same text
TOLERATED = 0.02  # share of the sample that may disagree (clips edited outside any trace)


@dataclass(frozen=True)
class SiteVectors:
    """The site's vectors as the served version sees them, before the check."""

    labelled: int  # labelled with the served model: to keep if the sample agrees
    sample: int  # how many of them the check embeds
    replaced: int  # labelled with another model, or not at all


def sample_size(labelled: int) -> int:
    return min(labelled, SAMPLE_FLOOR + math.floor(labelled * SAMPLE_SHARE), SAMPLE_MOST)


def _undecided(config: EmbeddingSettings) -> SiteTable | None:
    """The site's record, when its vectors have not been judged for the served model."""
    record = SiteTable.objects.filter(table_name=Clip._meta.db_table).first()
    if record is None or record.vectors_model == config.model:
        return None
    return record


def site_vectors(config: EmbeddingSettings) -> SiteVectors | None:
    """What a check would find; None when there is nothing to decide (the tool's own table,
    or the check already made for this model)."""
    if _undecided(config) is None:
        return None
    site_made = Clip.objects.live().filter(
        embedding__isnull=False, embedding_text_hash__isnull=True
    )
    labelled = site_made.filter(site_vector_q(config.model)).count()
    return SiteVectors(labelled, sample_size(labelled), site_made.count() - labelled)


def check_site_vectors(
    service: EmbeddingService,
    config: EmbeddingSettings,
    *,
    on_step: Callable[[str], None] | None = None,
) -> SiteVectors | None:
    """Judge the site's vectors for the served model once (see the module's docstring)."""
    found = site_vectors(config)
    if found is None:
        return None
    say = on_step or (lambda _: None)
    sample = list(
        Clip.objects.live()
        .filter(embedding_text_hash__isnull=True)
        .filter(site_vector_q(config.model))
        .with_text()
        .order_by("?")
        .values_list("id", "text", "text_hash_now", "embedding")[: found.sample]
    )
    disagreed = 0
    if sample:
        say(
            f"checking the site's {found.labelled} vectors of {config.model}: {len(sample)} sampled"
        )
        result = service.embed([text for _, text, _, _ in sample])
        fresh = []
        for (clip_id, _, text_hash, stored), vector in zip(sample, result.vectors, strict=True):
            if vector is None:
                continue
            stored = np.asarray(stored, dtype=np.float32)
            cosine = float(
                np.dot(stored, vector) / (np.linalg.norm(stored) * np.linalg.norm(vector))
            )
            disagreed += cosine < AGREEMENT
            fresh.append(EmbeddedClip(clip_id, text_hash, vector))
        write_embeddings(fresh, model=config.model, dimensions=config.dimensions, run_id=None)
    kept = bool(sample) and disagreed <= TOLERATED * len(sample)
    SiteTable.objects.filter(table_name=Clip._meta.db_table).update(
        vectors_model=config.model,
        vectors_kept=kept,
        vectors_checked=len(sample),
        vectors_disagreed=disagreed,
    )
    if sample:
        verdict = (
            f"kept: {found.labelled - len(sample)} count as current"
            if kept
            else f"{disagreed} of {len(sample)} disagree (cosine under {AGREEMENT}):"
            f" all {found.labelled} are treated as stale and replaced"
        )
        say(f"the site's vectors of {config.model}: {verdict}")
    return found
