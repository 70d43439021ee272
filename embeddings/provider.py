"""The narrow interface every embedding backend implements, and the errors it may raise.

The service decides what to do with an error by its class alone: retry it, split the
request around a rejected input, or stop the run. Messages never contain the API key.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ProviderResponse:
    vectors: np.ndarray  # float32, one row per input, in input order
    prompt_tokens: int
    remaining_requests: int | None = None
    remaining_tokens: int | None = None


class EmbeddingProvider(Protocol):
    model: str
    dimensions: int

    def embed(self, texts: list[str]) -> ProviderResponse:
        """Embed `texts` in one request; raise a ProviderError subclass on failure."""
        ...

    def describe(self) -> str: ...


class ProviderError(Exception):
    """Base of everything a provider raises."""


class RetryableError(ProviderError):
    """Worth another try: 429 pacing, 5xx, timeouts, dropped connections, malformed answers."""

    def __init__(self, message: str, *, retry_after: float | None = None, rate_limited=False):
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class InputRejected(ProviderError):
    """The server refused the request because of its input (HTTP 400)."""

    def __init__(self, message: str, *, index: int | None = None):
        super().__init__(message)
        self.index = index


class FatalProviderError(ProviderError):
    """No retry can help (bad key, unknown model, no quota, wrong vector size): stop the run.

    `exit_code` follows the contract: 2 for configuration a user must fix, 1 otherwise.
    """

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
