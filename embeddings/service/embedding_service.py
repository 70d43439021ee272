"""The embedding service: texts in, vectors out, at the lowest cost the limits allow.

Order of work for one call: drop blanks, truncate over-long texts, send each distinct text
at most once, serve what the cache holds, wait for texts another call of this process is
already sending (`in_flight`), pack the rest into few large requests, keep several
requests in flight under the shared rate limiter, retry what is worth retrying (tenacity, one
layer), split a request around an input the server refuses, cache what comes back.
"""

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from embeddings.app_settings import EmbeddingSettings
from embeddings.exceptions import Failure, FailureKind, InputRejected, RetryableError
from embeddings.providers.base import EmbeddingProvider, ProviderResponse
from embeddings.providers.tokens import estimate_tokens, truncate_to_tokens
from embeddings.service.breaker import Breaker
from embeddings.service.cache import EmbeddingCache
from embeddings.service.in_flight import InFlight
from embeddings.service.packing import pack_requests
from embeddings.service.rate_limiter import RateLimiter
from embeddings.service.stats import EmbeddingStats

logger = logging.getLogger(__name__)

BLANK = Failure.of(FailureKind.BLANK)

# `usage.prompt_tokens` is believed (for pacing and stats) only within these multiples of the
# estimate: Infinity, for one, reports characters (about 4x), which would slow a tight TPM
# four-fold for tokens nobody counts.
PLAUSIBLE_USAGE = (0.25, 2.0)


@dataclass
class EmbedResult:
    """Per input position: its vector, or the reason it has none."""

    vectors: list[np.ndarray | None]
    errors: dict[int, Failure]
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)


@dataclass(frozen=True)
class RequestLimits:
    max_inputs: int
    max_tokens: int
    max_tokens_per_input: int

    @classmethod
    def from_settings(cls, config: EmbeddingSettings) -> "RequestLimits":
        return cls(
            max_inputs=config.max_inputs_per_request,
            max_tokens=config.max_tokens_per_request,
            max_tokens_per_input=config.max_tokens_per_input,
        )


class EmbeddingService:
    def __init__(
        self,
        provider: EmbeddingProvider,
        *,
        cache: EmbeddingCache | None,
        limiter: RateLimiter,
        limits: RequestLimits,
        concurrency: int,
        max_retries: int,
        backoff_max: float = 30.0,
        version: tuple[str, int] | None = None,
    ) -> None:
        self.provider = provider
        # (model, dimensions) it embeds with: a search refuses a service of another version.
        self.version = version
        self.cache = cache
        self.limiter = limiter
        self.limits = limits
        self.max_retries = max_retries
        self.backoff_max = backoff_max
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="embed")
        self.in_flight = InFlight()
        self.breaker = Breaker(provider.describe())
        self._implausible_usage_logged = False  # see _tokens_used

    def cache_description(self) -> str:
        return self.cache.describe() if self.cache else "off"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def embed(self, texts: Sequence[str], *, use_cache: bool = True) -> EmbedResult:
        """Vectors for `texts`; a FatalProviderError (bad key, no quota...) propagates."""
        stats = EmbeddingStats()
        errors: dict[int, Failure] = {}
        wanted: dict[str, list[int]] = {}
        for position, text in enumerate(texts):
            if not text or not text.strip():
                errors[position] = BLANK
                stats.failures[BLANK.message] += 1
                continue
            sendable = truncate_to_tokens(text, self.limits.max_tokens_per_input)
            if sendable != text:
                stats.truncated += 1
            wanted.setdefault(sendable, []).append(position)

        found = self.cache.get_many(wanted) if self.cache and use_cache else {}
        stats.cache_hits = sum(len(wanted[t]) for t in found)
        missing = [t for t in wanted if t not in found]
        stats.cache_misses = sum(len(wanted[t]) for t in missing)

        owned, mine, borrowed = self.in_flight.take(missing)
        try:
            fresh, failed = self._embed_uncached(owned, stats)
            if self.cache and fresh:
                self.cache.set_many(fresh)
        except BaseException as err:
            self.in_flight.settle(owned, mine, ({}, {}), err)
            raise
        self.in_flight.settle(owned, mine, (fresh, failed))
        found.update(fresh)
        for text, owner in borrowed.items():
            their_vectors, their_failures = owner.result()
            if text in their_vectors:
                found[text] = their_vectors[text]
            else:
                failed[text] = their_failures[text]
        stats.shared = sum(len(wanted[t]) for t in borrowed)

        vectors: list[np.ndarray | None] = [None] * len(texts)
        for text, positions in wanted.items():
            for position in positions:
                if text in found:
                    vectors[position] = found[text]
                else:
                    errors[position] = failed[text]
                    stats.failures[failed[text].message] += 1
        return EmbedResult(vectors=vectors, errors=errors, stats=stats)

    def _embed_uncached(
        self, texts: list[str], stats: EmbeddingStats
    ) -> tuple[dict[str, np.ndarray], dict[str, Failure]]:
        groups = list(
            pack_requests(
                texts, max_inputs=self.limits.max_inputs, max_tokens=self.limits.max_tokens
            )
        )
        vectors: dict[str, np.ndarray] = {}
        failed: dict[str, Failure] = {}
        lock = threading.Lock()

        def run(group: list[str], tokens: int) -> None:
            local = EmbeddingStats()
            got, bad = self._embed_splitting(group, tokens, local)
            with lock:
                vectors.update(got)
                failed.update(bad)
                stats.add(local)

        if len(groups) == 1:
            run(*groups[0])
        else:
            for future in [self._pool.submit(run, g, t) for g, t in groups]:
                future.result()
        return vectors, failed

    def _embed_splitting(
        self, texts: list[str], tokens: int, stats: EmbeddingStats
    ) -> tuple[dict[str, np.ndarray], dict[str, Failure]]:
        """Embed one packed group; around a refused input, embed the rest without it."""
        try:
            response = self._send_with_retries(texts, tokens, stats)
        except InputRejected as err:
            if len(texts) == 1:
                return {}, {texts[0]: Failure.of(FailureKind.REJECTED, str(err))}
            if err.index is not None and 0 <= err.index < len(texts):
                rest = texts[: err.index] + texts[err.index + 1 :]
                got, bad = self._embed_splitting(rest, _estimate(rest), stats)
                bad[texts[err.index]] = Failure.of(FailureKind.REJECTED, str(err))
                return got, bad
            middle = len(texts) // 2
            got, bad = self._embed_splitting(texts[:middle], _estimate(texts[:middle]), stats)
            more, worse = self._embed_splitting(texts[middle:], _estimate(texts[middle:]), stats)
            return got | more, bad | worse
        except RetryableError as err:
            gave_up = Failure(
                FailureKind.GAVE_UP, f"gave up after {self.max_retries} retries: {err}"
            )
            return {}, dict.fromkeys(texts, gave_up)
        return dict(zip(texts, response.vectors, strict=True)), {}

    def _send_with_retries(
        self, texts: list[str], tokens: int, stats: EmbeddingStats
    ) -> ProviderResponse:
        backoff = wait_random_exponential(multiplier=0.5, max=self.backoff_max)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = getattr(error, "retry_after", None) or 0.0
            return max(retry_after, backoff(state))

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            stats.retries += 1
            if isinstance(error, RetryableError) and error.rate_limited and error.retry_after:
                self.limiter.pause(error.retry_after)  # every process waits, not just this one
            logger.info("retrying a request of %d texts: %s", len(texts), error)

        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            sleep=self.breaker.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._send, texts, tokens, stats)

    def _send(self, texts: list[str], tokens: int, stats: EmbeddingStats) -> ProviderResponse:
        self.breaker.check()
        stats.rate_wait_seconds += self.limiter.acquire(tokens)
        stats.requests += 1
        try:
            response = self.provider.embed(texts)
        except RetryableError as err:
            stats.rate_limited += err.rate_limited
            if not err.rate_limited:
                self.breaker.failed(err)
            raise
        except InputRejected:
            self.breaker.succeeded()  # an answer: the endpoint is up
            raise
        self.breaker.succeeded()
        stats.inputs += len(texts)
        stats.tokens += self._tokens_used(response.prompt_tokens, tokens)
        self.limiter.observe(response.remaining_requests, response.remaining_tokens)
        return response

    def _tokens_used(self, reported: int, estimate: int) -> int:
        """The tokens a request counts for: what the server reported when that is plausible
        next to the estimate (the limiter is charged the difference), else the estimate."""
        if not reported:
            return estimate
        low, high = PLAUSIBLE_USAGE
        if low * estimate <= reported <= high * estimate:
            self.limiter.charge(reported - estimate)
            return reported
        if not self._implausible_usage_logged:
            self._implausible_usage_logged = True
            logger.warning(
                "the server reported usage.prompt_tokens=%d for a request estimated at %d "
                "tokens (%.1fx): pacing and counting by the estimate (some servers, Infinity "
                "for one, report characters)",
                reported,
                estimate,
                reported / estimate,
            )
        return estimate


def _estimate(texts: list[str]) -> int:
    return sum(estimate_tokens(t) for t in texts)
