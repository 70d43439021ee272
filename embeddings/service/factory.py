"""The embedding service as the settings describe it: provider, cache alias, rate limiter."""

from django.core.cache import caches

from embeddings.app_settings import EmbeddingSettings
from embeddings.exceptions import ProviderConfigurationError
from embeddings.providers.base import EmbeddingProvider
from embeddings.service.cache import EmbeddingCache
from embeddings.service.embedding_service import EmbeddingService, RequestLimits
from embeddings.service.rate_limiter import (
    RateLimiter,
    UnlimitedRateLimiter,
    build_rate_limiter,
)

CACHE_ALIAS = "embeddings"


def build_embedding_service(
    config: EmbeddingSettings, *, concurrency: int | None = None
) -> EmbeddingService:
    """A ready service; the caller closes it. `concurrency` overrides the setting."""
    provider: EmbeddingProvider
    limiter: RateLimiter
    limits = RequestLimits.from_settings(config)
    if config.provider == "openai":
        from embeddings.providers.openai import OpenAIProvider

        provider = OpenAIProvider(
            api_key=config.api_key,
            base_url=config.base_url,
            model=config.model,
            dimensions=config.dimensions,
            send_dimensions=config.sends_dimensions,
            timeout=config.request_timeout,
        )
        limiter = build_rate_limiter(
            redis_url=config.redis_url,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
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
    cache = EmbeddingCache(
        caches[CACHE_ALIAS],
        model=config.model,
        dimensions=config.dimensions,
        ttl=config.cache_ttl,
    )
    return EmbeddingService(
        provider,
        cache=cache,
        limiter=limiter,
        limits=limits,
        concurrency=concurrency or config.concurrency,
        max_retries=config.max_retries,
        version=(config.model, config.dimensions),
    )
