"""Embeddings cached through Django's cache framework (alias `embeddings`).

Keys name the model, the size and a hash of the text, so changing either never serves an old
vector. Values are raw float32 bytes (3 KiB at 768 dimensions), not pickled float lists. A
batch costs one round trip each way (chunked get_many/set_many). A failing backend is logged
once and bypassed for a while: the cache saves money, it must never fail a run.
"""

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping

import numpy as np
from django.core.cache import BaseCache

from embeddings.clip_text import text_hash

logger = logging.getLogger(__name__)

CHUNK = 1000
BYPASS_SECONDS = 30.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class EmbeddingCache:
    def __init__(self, backend: BaseCache, *, model: str, dimensions: int, ttl: int) -> None:
        self._backend = backend
        self._prefix = f"{_UNSAFE.sub('_', model)}:{dimensions}:"
        self._dimensions = dimensions
        self._ttl = ttl
        self._bypass_until = 0.0
        self._warned = False
        self._lock = threading.Lock()

    def describe(self) -> str:
        return type(self._backend).__name__

    def key(self, text: str) -> str:
        return self._prefix + text_hash(text)

    def get_many(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors for whichever of `texts` are cached; missing texts are absent."""
        keys = {self.key(text): text for text in texts}
        found: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(keys), CHUNK):
            values = self._call(self._backend.get_many, chunk) or {}
            for key, value in values.items():
                vector = self._decode(value)
                if vector is not None:
                    found[keys[key]] = vector
        return found

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        items = [(self.key(t), np.asarray(v, dtype="<f4").tobytes()) for t, v in vectors.items()]
        for chunk in _chunks(items, CHUNK):
            self._call(self._backend.set_many, dict(chunk), timeout=self._ttl)

    def _decode(self, value: object) -> np.ndarray | None:
        if not isinstance(value, bytes) or len(value) != 4 * self._dimensions:
            return None
        vector = np.frombuffer(value, dtype="<f4")
        return vector if np.isfinite(vector).all() else None

    def _call(self, method, *args, **kwargs):
        if time.monotonic() < self._bypass_until:
            return None
        try:
            result = method(*args, **kwargs)
        except Exception as err:  # any backend failure: Redis down, disk full, bad pickle
            with self._lock:
                self._bypass_until = time.monotonic() + BYPASS_SECONDS
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "embedding cache unavailable (%s: %s); running without it",
                        type(err).__name__,
                        err,
                    )
            return None
        return result


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
