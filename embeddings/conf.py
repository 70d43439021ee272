"""Embedding settings, read from Django settings in one place and passed around as a value."""

from dataclasses import dataclass

from django.conf import settings

# List price per 1M input tokens (REFERENCE.md); unknown models report no cost.
PRICE_PER_MILLION_TOKENS = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}


@dataclass(frozen=True)
class EmbeddingSettings:
    enabled: bool
    provider: str
    api_key: str | None
    base_url: str | None
    model: str
    dimensions: int
    send_dimensions: bool
    requests_per_minute: int
    tokens_per_minute: int
    max_inputs_per_request: int
    max_tokens_per_request: int
    max_tokens_per_input: int
    concurrency: int
    request_timeout: float
    max_retries: int
    cache_ttl: int
    redis_url: str | None
    schedule_minutes: int
    schedule_lookback_days: int
    schedule_limit: int
    search_ef: int = 40  # hnsw.ef_search for similar_to / search_clips

    @property
    def price_per_million_tokens(self) -> float | None:
        return PRICE_PER_MILLION_TOKENS.get(self.model)

    def __repr__(self) -> str:
        # Never show the key: reprs end up in logs and tracebacks.
        return f"EmbeddingSettings(model={self.model!r}, dimensions={self.dimensions})"


def _send_dimensions(value: str, model: str) -> bool:
    """`dimensions` only works on text-embedding-3-*; ada-002 and others reject it."""
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    return model.startswith("text-embedding-3")


def embedding_settings() -> EmbeddingSettings:
    s = settings
    return EmbeddingSettings(
        enabled=s.EMBEDDING_ENABLED,
        provider=s.EMBEDDING_PROVIDER,
        api_key=s.OPENAI_API_KEY,
        base_url=s.OPENAI_BASE_URL,
        model=s.EMBEDDING_MODEL,
        dimensions=s.EMBEDDING_DIMENSIONS,
        send_dimensions=_send_dimensions(s.EMBEDDING_SEND_DIMENSIONS, s.EMBEDDING_MODEL),
        requests_per_minute=s.EMBEDDING_REQUESTS_PER_MINUTE,
        tokens_per_minute=s.EMBEDDING_TOKENS_PER_MINUTE,
        max_inputs_per_request=s.EMBEDDING_MAX_INPUTS_PER_REQUEST,
        max_tokens_per_request=s.EMBEDDING_MAX_TOKENS_PER_REQUEST,
        max_tokens_per_input=s.EMBEDDING_MAX_TOKENS_PER_INPUT,
        concurrency=s.EMBEDDING_CONCURRENCY,
        request_timeout=s.EMBEDDING_REQUEST_TIMEOUT,
        max_retries=s.EMBEDDING_MAX_RETRIES,
        cache_ttl=s.EMBEDDING_CACHE_TTL,
        redis_url=s.REDIS_URL,
        schedule_minutes=s.EMBEDDING_SCHEDULE_MINUTES,
        schedule_lookback_days=s.EMBEDDING_SCHEDULE_LOOKBACK_DAYS,
        schedule_limit=s.EMBEDDING_SCHEDULE_LIMIT,
        search_ef=s.EMBEDDING_SEARCH_EF,
    )
