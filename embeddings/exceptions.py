"""Every error the app raises on purpose, and the one place that turns an error into an exit code.

Callers decide by class alone: a configuration error is the user's to fix (exit 2), a provider
error says whether retrying can help, and a run that stopped part-way is `RunAborted` (exit 1).
Messages never contain the API key.
"""

from dataclasses import dataclass
from enum import Enum


class EmbeddingError(Exception):
    """Base of everything below."""


class ConfigurationError(EmbeddingError):
    """Something the user must fix before any run can work; the message says what."""


class ProviderError(EmbeddingError):
    """Base of everything an embedding provider raises."""


class RetryableError(ProviderError):
    """Worth another try: 429 pacing, 5xx, timeouts, dropped connections, malformed answers."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, rate_limited: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class InputRejected(ProviderError):
    """The server refused the request because of its input (HTTP 400)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class FatalProviderError(ProviderError):
    """No retry can help (no quota left, access denied): stop the run."""


class ProviderConfigurationError(FatalProviderError, ConfigurationError):
    """The provider says the settings are wrong: the key, the model, the vector size."""


class RunAborted(EmbeddingError):
    """A run stopped before its end for a reason outside the clips: the database failed, or
    something unexpected broke a stage. What was written stays; the next run continues."""


class FailureKind(Enum):
    """Why one clip got no vector in a run. `skipped` kinds are not failures: nothing could be
    embedded (blank text), or the clip's text (or the served version) changed while its request
    was in flight."""

    BLANK = "blank text: nothing to embed"
    CHANGED = "text changed during the run: the next run embeds the new text"
    VERSION_CHANGED = "another version is served now: the next run embeds for it"
    REJECTED = "rejected by the API"
    GAVE_UP = "gave up after retries"

    @property
    def skipped(self) -> bool:
        return self in (FailureKind.BLANK, FailureKind.CHANGED, FailureKind.VERSION_CHANGED)


def exit_code(error: BaseException | None) -> int:
    """The contract's exit code for a run that ended with `error` (None: it did not)."""
    if error is None:
        return 0
    return 2 if isinstance(error, ConfigurationError) else 1


@dataclass(frozen=True)
class Failure:
    """One clip's missing vector: its kind, to decide by, and the message kept on the clip."""

    kind: FailureKind
    message: str

    @classmethod
    def of(cls, kind: FailureKind, detail: str = "") -> "Failure":
        return cls(kind, f"{kind.value}: {detail}" if detail else kind.value)

    def __str__(self) -> str:
        return self.message


class SearchError(EmbeddingError):
    """A search that could not run: the query text was not embedded."""


class InvalidSearch(SearchError, ConfigurationError):
    """A search asked for what cannot be: k or ef_search out of range, a vector of another size."""
