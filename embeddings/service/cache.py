"""Embeddings cached through Django's cache framework (alias `embeddings`).

Keys name the vectors' source, the model, the size and a hash of the text, so changing any of
them never serves an old vector. Values are raw float32 bytes (3 KiB at 768 dimensions), not
pickled float lists. A batch costs one round trip each way per chunk. On django-redis those
round trips are one MGET and one Lua call setting every key with its TTL, on django-redis's own
connection pool: its get_many/set_many pickle each value and queue a command per key, which
cost 124 and 241 ms per 2,048 vectors here against 12 and 120 ms, nearly all of it holding the
GIL the embedding threads need. Any other backend goes through Django's cache API. A failing
backend is logged once and bypassed for a while: the cache saves money, it must never fail a
run.
"""

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping

import numpy as np
from django.core.cache import BaseCache
from django_redis.cache import RedisCache

from embeddings.clip_text import text_hash

logger = logging.getLogger(__name__)

CHUNK = 1000
BYPASS_SECONDS = 30.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# KEYS: the entries; ARGV: their values, then the TTL in seconds.
_SET_WITH_TTL = """
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl) end
return #KEYS
"""


class EmbeddingCache:
    """`source` names who makes the vectors (the local model, or an endpoint): two servers
    that serve one model name need not make the same vectors, so neither answers for the
    other."""

    def __init__(
        self, backend: BaseCache, *, source: str, model: str, dimensions: int, ttl: int
    ) -> None:
        self._backend = backend
        self._store = (
            _RedisStore(backend) if isinstance(backend, RedisCache) else _DjangoStore(backend)
        )
        self._prefix = f"{_UNSAFE.sub('_', source)}:{_UNSAFE.sub('_', model)}:{dimensions}:"
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
            values = self._call(self._store.get_many, chunk) or {}
            found.update((keys[key], vector) for key, vector in self._decode(values).items())
        return found

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Encoded a chunk at a time: all of a request's values at once were one more 6 MB
        copy per embedder thread, on top of the request's own buffers."""
        texts = list(vectors)
        for chunk in _chunks(texts, CHUNK):
            items = [(self.key(t), np.asarray(vectors[t], dtype="<f4").tobytes()) for t in chunk]
            self._call(self._store.set_many, items, self._ttl)

    def _decode(self, values: Mapping[str, object]) -> dict[str, np.ndarray]:
        """The entries that are whole, finite vectors; anything else is a miss. One matrix
        and one finiteness check for all: per vector, the check cost 16 microseconds."""
        size = 4 * self._dimensions
        whole = {k: v for k, v in values.items() if isinstance(v, bytes) and len(v) == size}
        if not whole:
            return {}
        matrix = np.frombuffer(b"".join(whole.values()), dtype="<f4").reshape(len(whole), -1)
        finite = np.isfinite(matrix).all(axis=1)
        return {key: matrix[row] for row, key in enumerate(whole) if finite[row]}

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


class _DjangoStore:
    """Any Django cache backend, through its own API."""

    def __init__(self, backend: BaseCache) -> None:
        self._backend = backend

    def get_many(self, keys: list[str]) -> dict[str, object]:
        return self._backend.get_many(keys)

    def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        self._backend.set_many(dict(items), timeout=ttl)


class _RedisStore:
    """django-redis's connection, spoken to directly (see the module's docstring); keys are
    the backend's own (`make_key`: its prefix and version), so `ttl()` and `delete()` work."""

    def __init__(self, backend: RedisCache) -> None:
        self._backend = backend
        self._client = backend.client.get_client(write=True)
        self._set_with_ttl = self._client.register_script(_SET_WITH_TTL)

    def get_many(self, keys: list[str]) -> dict[str, object]:
        values = self._client.mget([self._backend.make_key(key) for key in keys])
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        keys = [self._backend.make_key(key) for key, _ in items]
        self._set_with_ttl(keys=keys, args=[value for _, value in items] + [ttl])
