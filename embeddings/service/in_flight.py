"""Texts this process is embedding right now, so that two calls never pay for one text twice.

Why: the backfill keeps several requests in flight from several threads, and the cache only
learns a vector once its request has come back. Two clips with the same text in two
concurrent calls were therefore each sent (docs/operations.md, "Known limits"). A call now takes
ownership of the texts nobody is sending, sends only those, and waits for the outcome of the
calls that own the others. An owner settles its texts before it waits for anyone else's, so
no two calls can wait on each other. One future per owning call, not per text: a text costs
two dict operations (a future per text cost 10 microseconds, 0.2 s for 20,000 texts).
"""

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future

import numpy as np

from embeddings.exceptions import Failure

# An owning call's outcome: the vectors it got and the failures of the rest of its texts.
Outcome = tuple[Mapping[str, np.ndarray], Mapping[str, Failure]]


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, Future[Outcome]] = {}
        self.borrowed = 0  # texts handed to a call that another call was sending, since start

    def take(self, texts: Iterable[str]) -> tuple[list[str], Future[Outcome], dict[str, Future]]:
        """The texts this caller now owns and must send, the future it settles for them
        (`settle`), and for each text another call is sending, that call's future."""
        mine: Future[Outcome] = Future()
        owned: list[str] = []
        borrowed: dict[str, Future[Outcome]] = {}
        with self._lock:
            owners = self._owners
            for text in texts:
                owner = owners.get(text)
                if owner is None:
                    owners[text] = mine
                    owned.append(text)
                else:
                    borrowed[text] = owner
            self.borrowed += len(borrowed)
        return owned, mine, borrowed

    def settle(
        self,
        owned: list[str],
        mine: Future[Outcome],
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> None:
        """Hand the owner's outcome to every call waiting for its texts; `error` (the call
        failed as a whole, say a revoked key) is raised in each of them too."""
        with self._lock:
            for text in owned:
                del self._owners[text]
        if error is not None:
            mine.set_exception(error)
        else:
            mine.set_result(outcome)
