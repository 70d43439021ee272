"""An HNSW build gets memory for its graph (`index.build_memory`), measured against pgvector's
own word: it says when the graph no longer fits and the build goes on at disk speed."""

import pytest
from django.db import connection

from embeddings.backfill import index
from embeddings.backfill.index import build_hnsw_index, build_memory, drop_hnsw_index
from tests.support.clips import make_clips

pytestmark = pytest.mark.django_db(transaction=True)

MB = 2**20


def test_memory_follows_the_graph_between_postgres_default_and_the_sessions_setting(caplog):
    small = build_memory(1_000, "vector", 768, session_setting=64 * MB)
    assert small == 64 * MB  # PostgreSQL's default is the least
    hundred_k = build_memory(100_000, "vector", 768, session_setting=64 * MB)
    assert 400 * MB < hundred_k < 420 * MB
    assert build_memory(100_000, "halfvec", 768, session_setting=64 * MB) < 0.65 * hundred_k
    assert not caplog.records  # every graph so far fits
    assert build_memory(10_000_000, "vector", 768, session_setting=64 * MB) == 1024 * MB
    assert "raise maintenance_work_mem" in caplog.text  # the one that does not is named
    assert build_memory(10_000_000, "vector", 768, session_setting=8192 * MB) == 8192 * MB


def build_notices() -> list[str]:
    """Build the clips index over the vectors there are; pgvector's notices meanwhile."""
    notices: list[str] = []

    def handler(diagnostic) -> None:
        notices.append(diagnostic.message_primary)

    connection.ensure_connection()
    connection.connection.add_notice_handler(handler)
    try:
        drop_hnsw_index()
        build_hnsw_index()
    finally:
        connection.connection.remove_notice_handler(handler)
    return notices


@pytest.fixture
def random_vectors():
    """3,000 clips with random 768-dimension vectors: a graph of about 12 MB."""
    make_clips(3_000)
    drop_hnsw_index()  # written through the index, the vectors took 20-40 s; the test builds it
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE clips SET embedding = (SELECT array_agg(random() - 0.5)"
            " FROM generate_series(1, 768) WHERE clips.id > 0)::vector"
        )


def test_the_graph_fits_in_the_memory_it_is_given(random_vectors, monkeypatch):
    monkeypatch.setattr(index, "LEAST_BUILD_MEMORY", 0)  # the estimate alone
    assert build_notices() == []


def test_the_graph_needs_more_than_its_vectors(random_vectors, monkeypatch):
    """The check above can fail: without the graph's own bytes pgvector runs out."""
    monkeypatch.setattr(index, "LEAST_BUILD_MEMORY", 0)
    monkeypatch.setattr(index, "GRAPH_BYTES_PER_VECTOR", 0)
    monkeypatch.setattr(index, "PARALLEL_RESERVE", 0)
    assert any("no longer fits into maintenance_work_mem" in n for n in build_notices())
