"""A run's circuit breaker: an endpoint that fails every request for a while stops the run.

Without it, each request in flight spent its own retries (six, with backoff up to 30 s) before
giving up, and a run with its endpoint gone ended minutes later with thousands of "gave up"
failures that did not say where it had been sending. One breaker is shared by every request
of a service: any answer closes it again; failures without a single answer in between for
BREAK_AFTER_SECONDS open it, and every request then fails at once with one error that names
the endpoint. Pacing (429s) is not failure: the rate limiter handles it.
"""

import threading
import time
from collections.abc import Callable

from embeddings.exceptions import FatalProviderError

BREAK_AFTER_SECONDS = 20.0
POLL_SECONDS = 0.5  # how often a retry's sleep looks whether the breaker opened meanwhile


class Breaker:
    def __init__(
        self,
        endpoint: str,
        *,
        after_seconds: float = BREAK_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.after_seconds = after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_error: BaseException | None = None
        self._open = threading.Event()

    def succeeded(self) -> None:
        with self._lock:
            self._failing_since = None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._last_error = error
        self.check()

    def check(self) -> None:
        """Raise the run's end if the endpoint has failed for too long without an answer."""
        with self._lock:
            since = self._failing_since
            if since is not None and self._clock() - since >= self.after_seconds:
                self._open.set()
            error = self._last_error
        if self._open.is_set():
            raise FatalProviderError(
                f"{self.endpoint} stopped answering: every request failed for"
                f" {self.after_seconds:.0f} s (last: {error}). The run stops; what was embedded"
                " is kept; run again once the endpoint answers"
            )

    def sleep(self, seconds: float) -> None:
        """A retry's wait, cut short when the breaker opens (tenacity's `sleep`)."""
        deadline = self._clock() + seconds
        while (left := deadline - self._clock()) > 0:
            if self._open.wait(min(left, POLL_SECONDS)):
                return
            if self._failing_since is not None:
                try:
                    self.check()
                except FatalProviderError:
                    return
