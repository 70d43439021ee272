"""What a run would cost before it runs: clips, tokens, requests, price and time at the limits."""

import math
import time
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Func, IntegerField, Sum

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.runs import cost_usd
from embeddings.clip_text import clip_text_expression
from embeddings.models import Clip
from embeddings.providers.batch_shapes import MAX_BATCH_INPUTS
from embeddings.providers.tokens import BYTES_PER_TOKEN


@dataclass(frozen=True)
class Estimate:
    clips: int
    tokens: int
    requests: int
    cost_usd: Decimal | None
    minutes_at_limits: float
    # Through the Batch API (`--batch-api`): half the price; batches of at most 50,000 inputs
    # and the queue limit's tokens; whether all of it fits the queue at once.
    batch_cost_usd: Decimal | None = None
    batches: int = 0
    fits_batch_queue: bool = True


def token_estimate_sql() -> Func:
    """`embeddings.providers.tokens.estimate_tokens` of each clip's text, inside PostgreSQL:
    ceil(UTF-8 bytes / 4) in integer SQL, so a million clips are priced in one aggregate."""
    octets = Func(clip_text_expression(), function="octet_length", output_field=IntegerField())
    return (octets + BYTES_PER_TOKEN - 1) / BYTES_PER_TOKEN


def estimate(queryset, config: EmbeddingSettings, *, limit: int | None = None) -> Estimate:
    if limit is not None:
        queryset = queryset.filter(pk__in=queryset.order_by("pk").values("pk")[:limit])
    totals = queryset.aggregate(clips=Count("pk"), tokens=Sum(token_estimate_sql()))
    clips, tokens = totals["clips"], int(totals["tokens"] or 0)
    requests = math.ceil(clips / config.max_inputs_per_request) if clips else 0
    minutes = max(requests / config.requests_per_minute, tokens / config.tokens_per_minute)
    batches = max(
        math.ceil(clips / MAX_BATCH_INPUTS), math.ceil(tokens / config.batch_queue_tokens)
    )
    return Estimate(
        clips=clips,
        tokens=tokens,
        requests=requests,
        cost_usd=cost_usd(tokens, config),
        minutes_at_limits=round(minutes, 2),
        batch_cost_usd=cost_usd(tokens, config, batch=True),
        batches=batches,
        fits_batch_queue=tokens <= config.batch_queue_tokens,
    )


SAMPLE_CLIPS = 64  # texts the local model embeds once to measure this machine's pace


@dataclass(frozen=True)
class MeasuredRate:
    """The local model's pace on this machine, from embedding a sample of the real texts."""

    clips: int  # in the sample
    seconds: float
    clips_per_second: float

    def seconds_for(self, clips: int) -> float:
        return clips / self.clips_per_second if self.clips_per_second else 0.0


def measure_local_rate(queryset, config: EmbeddingSettings, *, sample: int = SAMPLE_CLIPS):
    """Embed up to `sample` of the selected clips' texts with the local model (nothing is
    stored or cached) and time it, after one warm-up call; None when nothing is selected."""
    from embeddings.providers.local import LocalProvider  # pulls in torch: only here

    ids = queryset.order_by("pk").values("pk")[:sample]
    texts = [
        text
        for text in Clip.objects.with_text().filter(pk__in=ids).values_list("text", flat=True)
        if text and text.strip()
    ]
    if not texts:
        return None
    provider = LocalProvider(model=config.model, dimensions=config.dimensions)
    provider.embed(texts[:4])  # the first call pays for loading kernels, not the pace
    started = time.perf_counter()
    provider.embed(texts)
    seconds = max(time.perf_counter() - started, 1e-6)
    return MeasuredRate(clips=len(texts), seconds=seconds, clips_per_second=len(texts) / seconds)
