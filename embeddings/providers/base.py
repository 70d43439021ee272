"""The narrow interface every embedding backend implements.

A provider makes one request per call and classifies what went wrong into the errors of
`embeddings.exceptions` at its boundary; the service decides what to do by error class alone.
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
