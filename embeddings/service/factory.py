"""The embedding service as the settings describe it: provider, cache alias, rate limiter."""

from typing import TYPE_CHECKING

from django.core.cache import caches

from embeddings.app_settings import EmbeddingSettings
from embeddings.exceptions import ProviderConfigurationError
from embeddings.providers.base import EmbeddingProvider
from embeddings.service.cache import EmbeddingCache
from embeddings.service.embedding_service import EmbeddingService, RequestLimits
from embeddings.service.rate_limiter import (
    RateLimiter,
    UnlimitedRateLimiter,
    budget_key,
    build_rate_limiter,
)

if TYPE_CHECKING:
    from embeddings.providers.openai_batch import OpenAIBatchClient

CACHE_ALIAS = "embeddings"
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # what the openai client uses when none is set


def build_embedding_service(
    config: EmbeddingSettings, *, concurrency: int | None = None
) -> EmbeddingService:
    """A ready service; the caller closes it. `concurrency` overrides the setting."""
    provider: EmbeddingProvider
    limiter: RateLimiter
    limits = RequestLimits.from_settings(config)
    if config.provider == "openai":
        from embeddings.providers.openai import OpenAIProvider

        provider = OpenAIProvider(**_openai_arguments(config))
        limiter = build_rate_limiter(
            redis_url=config.redis_url,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            key=budget_key(config.base_url, config.api_key, config.model),
        )
        # A request bigger than the TPM could never be granted, so it would never go.
        limits = RequestLimits(
            max_inputs=limits.max_inputs,
            max_tokens=min(limits.max_tokens, config.tokens_per_minute),
            max_tokens_per_input=limits.max_tokens_per_input,
        )
    elif config.provider == "local":
        # Imported only here: it pulls in torch, which the OpenAI path never needs.
        from embeddings.providers.local import LocalProvider

        provider = LocalProvider(model=config.model, dimensions=config.dimensions)
        limiter = UnlimitedRateLimiter()  # no account to protect
        concurrency = 1  # the model already uses every core
    else:
        raise ProviderConfigurationError(
            f"EMBEDDING_PROVIDER={config.provider!r} is not supported: use openai or local"
        )
    return EmbeddingService(
        provider,
        cache=build_embedding_cache(config),
        limiter=limiter,
        limits=limits,
        concurrency=concurrency or config.concurrency,
        max_retries=config.max_retries,
        version=(config.model, config.dimensions),
    )


def cache_source(config: EmbeddingSettings) -> str:
    """Who makes the vectors: the local model, or the endpoint (OpenAI's when none is set)."""
    if config.provider == "local":
        return "local"
    return (config.base_url or DEFAULT_BASE_URL).split("://", 1)[-1].rstrip("/")


def build_embedding_cache(config: EmbeddingSettings) -> EmbeddingCache:
    return EmbeddingCache(
        caches[CACHE_ALIAS],
        source=cache_source(config),
        model=config.model,
        dimensions=config.dimensions,
        ttl=config.cache_ttl,
    )


def build_batch_client(config: EmbeddingSettings) -> "OpenAIBatchClient":
    """The Batch API client: OpenAI's (or a compatible server's), never the local model."""
    from embeddings.providers.openai_batch import OpenAIBatchClient

    if config.provider != "openai":
        raise ProviderConfigurationError(
            f"--batch-api needs EMBEDDING_PROVIDER=openai, not {config.provider!r}: the Batch "
            "API is OpenAI's"
        )
    if not config.api_key:
        raise ProviderConfigurationError(
            "OPENAI_API_KEY is not set: put it in .env or the environment"
        )
    return OpenAIBatchClient(**_openai_arguments(config))


def _openai_arguments(config: EmbeddingSettings) -> dict:
    """What the online provider and the batch client are both built from."""
    return {
        "api_key": config.api_key,
        "base_url": config.base_url,
        "model": config.model,
        "dimensions": config.dimensions,
        "send_dimensions": config.sends_dimensions,
        "timeout": config.request_timeout,
    }
