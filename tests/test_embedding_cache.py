"""The embedding cache on real django-redis: it saves money and never serves a wrong vector."""

import logging

import numpy as np
import pytest
from django_redis.cache import RedisCache

from embeddings.service.cache import EmbeddingCache
from tests.support.openai_server import expected_vector

SOURCE = "api.openai.com/v1"
MODEL = "text-embedding-3-small"
DIMS = 64
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def backend(redis_url: str, unique_prefix: str) -> RedisCache:
    """django-redis under this test's own prefix; entries expire on their own (ttl=600)."""
    return RedisCache(redis_url, {"KEY_PREFIX": unique_prefix})


def vectors_for(texts: list[str], dims: int = DIMS) -> dict[str, np.ndarray]:
    return {text: expected_vector(text, dims) for text in texts}


def test_cached_vectors_come_back_exactly_and_missing_texts_are_absent(backend):
    cache = EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=600)
    stored = vectors_for([f"clip {i}" for i in range(2500)])  # more than one chunk each way
    cache.set_many(stored)

    found = cache.get_many([*stored, "never cached"])

    assert set(found) == set(stored)
    for text, vector in found.items():
        np.testing.assert_array_equal(vector, stored[text])


def test_a_vector_cached_for_one_source_model_or_size_is_never_served_for_another(backend):
    EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=600).set_many(
        vectors_for(["a"])
    )

    other_size = EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=32, ttl=600)
    other_model = EmbeddingCache(
        backend, source=SOURCE, model="text-embedding-3-large", dimensions=DIMS, ttl=600
    )

    other_source = EmbeddingCache(backend, source="local", model=MODEL, dimensions=DIMS, ttl=600)

    assert other_size.get_many(["a"]) == {}
    assert other_model.get_many(["a"]) == {}
    assert other_source.get_many(["a"]) == {}


@pytest.mark.parametrize(
    "bad_value",
    [
        b"\x00" * 10,
        np.zeros(DIMS + 1, dtype="<f4").tobytes(),
        np.full(DIMS, np.nan, dtype="<f4").tobytes(),
        [0.5] * DIMS,
    ],
    ids=["truncated", "wrong-size", "nan", "not-bytes"],
)
def test_a_corrupt_entry_is_a_miss_not_a_vector(backend, bad_value):
    cache = EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=600)
    backend.set(cache.key("a"), bad_value)

    assert cache.get_many(["a"]) == {}


def test_entries_expire_after_the_configured_ttl(backend):
    cache = EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=900)
    cache.set_many(vectors_for(["a"]))

    assert 800 < backend.ttl(cache.key("a")) <= 900


def test_an_unreachable_backend_is_logged_once_and_bypassed(caplog):
    caplog.set_level(logging.INFO, logger="embeddings")
    timeouts = {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}
    cache = EmbeddingCache(
        RedisCache(CLOSED_PORT_URL, {"OPTIONS": timeouts}),
        source=SOURCE,
        model=MODEL,
        dimensions=DIMS,
        ttl=60,
    )

    assert cache.get_many(["a", "b"]) == {}
    cache.set_many(vectors_for(["a"]))
    assert cache.get_many(["a"]) == {}

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "embedding cache unavailable" in warnings[0]
    assert "Connection" in warnings[0]
