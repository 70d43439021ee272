"""Semantic search measured on a table of synthetic vectors; run by `search.py`.

Against the migrated database of DATABASE_URL (EMBEDDING_DIMENSIONS sized; halfvec if
EMBEDDING_STORAGE=halfvec made it so): writes `--clips` clips with unit vectors by binary COPY
(every 50th clip removed, every 100th stale, so the post-filters have rows to skip), builds
the HNSW index as the project builds it, then measures with the project's own search code:

- recall@10 of `nearest_clips` (HNSW, iterative scan) against exact numpy search, for
  `--queries` query vectors drawn like the data, at EMBEDDING_SEARCH_EF, and the latency of
  those database queries;
- latency of `Clip.objects.similar_to(text)` for `--queries` texts whose embeddings are cached
  (a first pass fills the cache through the test server and warms the database);
- with `--coverage-only`: the render time of the admin coverage page and of a `/metrics`
  scrape instead.

    python -m tests.benchmarks.search_probe --clips 20000 --queries 100   # prints JSON
"""

import argparse
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

CHUNK = 50_000
SEED = 8
REMOVED_EVERY = 50
STALE_EVERY = 100
K = 10
LATENT_DIMENSIONS = 32
NOISE = 0.33  # per coordinate, against a signal of variance 1: about 10% of the energy


def unit_vectors(rng: np.random.Generator, count: int, dimensions: int, data: str) -> np.ndarray:
    """`random`: independent directions, HNSW's worst case (no neighbourhoods to walk: every
    distance is about 1). `lowrank`: points near a LATENT_DIMENSIONS-dimensional subspace plus
    10% noise, the shape real text embeddings have (a low intrinsic dimension)."""
    if data == "random":
        matrix = rng.standard_normal((count, dimensions), dtype=np.float32)
    else:
        basis = np.random.default_rng([SEED, 2, dimensions]).standard_normal(
            (LATENT_DIMENSIONS, dimensions), dtype=np.float32
        ) / np.sqrt(LATENT_DIMENSIONS)
        latent = rng.standard_normal((count, LATENT_DIMENSIONS), dtype=np.float32)
        matrix = latent @ basis + NOISE * rng.standard_normal((count, dimensions), np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def vector_chunks(count: int, dimensions: int, data: str) -> Iterator[tuple[int, np.ndarray]]:
    """(first id - 1, unit vectors) chunk by chunk; the same numbers every time it is called."""
    for start in range(0, count, CHUNK):
        rng = np.random.default_rng([SEED, start])
        yield start, unit_vectors(rng, min(CHUNK, count - start), dimensions, data)


def searchable(ids: np.ndarray) -> np.ndarray:
    return (ids % REMOVED_EVERY != 0) & (ids % STALE_EVERY != 0)


def load(url: str, count: int, dimensions: int, model: str, data: str, storage: str) -> float:
    """Binary COPY of `count` clips with current vectors into a `storage` (vector or halfvec)
    column; returns the seconds it took."""
    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from embeddings.clip_text import text_hash

    columns = (
        "id, twitch_clip_id, title, broadcaster_name, creator_name, is_removed, created_at, "
        "embedding, embedding_model, embedding_generated_at, embedding_dimensions, "
        "embedding_text_hash, embedding_attempts"
    )
    types = ["int8", "text", "text", "text", "text", "bool", "timestamptz", storage, "text"]
    types += ["timestamptz", "int4", "text", "int4"]
    now = datetime.now(UTC)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy(f"COPY clips ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for start, matrix in vector_chunks(count, dimensions, data):
                for offset, vector in enumerate(matrix):
                    clip_id = start + offset + 1
                    title, broadcaster = f"Bench clip {clip_id}", f"streamer{clip_id % 1000}"
                    text = f"Title: {title}. Broadcaster: {broadcaster}"
                    stale = clip_id % STALE_EVERY == 0
                    copy.write_row(
                        (
                            clip_id,
                            f"bench-{clip_id}",
                            title,
                            broadcaster,
                            broadcaster,
                            clip_id % REMOVED_EVERY == 0,
                            now,
                            HalfVector(vector) if storage == "halfvec" else vector,
                            model,
                            now,
                            dimensions,
                            "0" * 32 if stale else text_hash(text),
                            1,
                        )
                    )
        conn.execute("SELECT setval('clips_id_seq', %s)", [count])
        current = conn.execute(
            "SELECT count(*) FROM clips WHERE embedding_text_hash = text_hash"
        ).fetchone()[0]
    expected = int(np.count_nonzero(np.arange(1, count + 1) % STALE_EVERY))
    if current != expected:
        raise RuntimeError(f"{current} current clips, expected {expected}: text format drifted?")
    return time.perf_counter() - started


def exact_top_k(queries: np.ndarray, count: int, dimensions: int, data: str) -> list[list[int]]:
    """Ids of the K nearest searchable clips per query, streaming over the regenerated vectors."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_dist = np.zeros((len(queries), 0), dtype=np.float64)
    for start, matrix in vector_chunks(count, dimensions, data):
        ids = np.arange(start + 1, start + 1 + len(matrix))
        keep = searchable(ids)
        distances = 1.0 - queries.astype(np.float64) @ matrix[keep].astype(np.float64).T
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids[keep], distances.shape)], axis=1)
        all_dist = np.concatenate([best_dist, distances], axis=1)
        order = np.argsort(all_dist, axis=1, kind="stable")[:, :K]
        best_ids = np.take_along_axis(all_ids, order, axis=1)
        best_dist = np.take_along_axis(all_dist, order, axis=1)
    return best_ids.tolist()


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p95_ms": float(np.percentile(seconds, 95) * 1000),
        "mean_ms": float(np.mean(seconds) * 1000),
    }


def plan_uses_index(vector: np.ndarray, config, forced: bool) -> bool:
    """EXPLAIN of the search SQL: with the search's settings, or with only ef_search/iterative
    scan set (what the planner would pick by itself)."""
    from django.db import connection, transaction

    from embeddings.models import Clip
    from embeddings.search.vector import SEARCH_SETTINGS_SQL, search_queryset

    sql, params = search_queryset(
        Clip.objects.all(), vector, K, config=config
    ).query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS_SQL, [str(config.search_ef)])
        if not forced:
            cursor.execute("SET LOCAL enable_seqscan = on")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return "clips_embedding_hnsw" in plan


def page_ms(path: str, renders: int) -> dict[str, float]:
    """A page (the admin coverage page, `/metrics`) got whole as a superuser gets it,
    `renders` times after one warm-up."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    # Pages name static files through WhiteNoise's manifest, as behind `make serve`.
    call_command("collectstatic", "--noinput", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench", is_staff=True, is_superuser=True)
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    seconds = []
    for attempt in range(renders + 1):
        began = time.perf_counter()
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
        if attempt:
            seconds.append(time.perf_counter() - began)
    return percentiles_ms(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--data", choices=("lowrank", "random"), default="lowrank")
    parser.add_argument(
        "--coverage-only",
        action="store_true",
        help="load without an index and time the admin coverage page `--queries` times",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.db import connection

    from embeddings.app_settings import embedding_settings
    from embeddings.backfill.index import build_hnsw_index, drop_hnsw_index
    from embeddings.models import Clip, embedding_column_type
    from embeddings.search.vector import nearest_clips
    from embeddings.service.factory import build_embedding_service

    config = embedding_settings()
    dims = config.dimensions
    drop_hnsw_index()
    storage, _ = embedding_column_type()  # halfvec when EMBEDDING_STORAGE=halfvec migrated it
    url = os.environ["DATABASE_URL"]
    load_seconds = load(url, args.clips, dims, config.model, args.data, storage)
    if args.coverage_only:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE clips")
        page = page_ms("/admin/embeddings/clip/coverage/", args.queries)
        metrics = page_ms("/metrics", args.queries)
        summary = {"clips": args.clips, "dimensions": dims, "coverage_page": page}
        print(json.dumps({**summary, "metrics": metrics}))
        return
    with connection.cursor() as cursor:  # the build's ceiling: this machine has the memory
        cursor.execute("SET maintenance_work_mem = '8GB'")
    started = time.perf_counter()
    build_hnsw_index()
    build_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE clips")
        cursor.execute("SELECT pg_relation_size('clips_embedding_hnsw')")
        index_bytes = cursor.fetchone()[0]

    # Queries from the data's own distribution, never one of its points (a seed no chunk has).
    queries = unit_vectors(np.random.default_rng([SEED, 1, 0]), args.queries, dims, args.data)
    started = time.perf_counter()
    truth = exact_top_k(queries, args.clips, dims, args.data)
    exact_seconds = time.perf_counter() - started

    def search_ids(ef: int, seconds: list[float]) -> list[list[int]]:
        found = []
        for vector in queries:
            began = time.perf_counter()
            clips = nearest_clips(Clip.objects.all(), vector, K, config=config, ef_search=ef)
            seconds.append(time.perf_counter() - began)
            found.append([clip.pk for clip in clips])
        return found

    search_ids(config.search_ef, [])  # warm the index pages
    db_seconds: list[float] = []
    search_recall = recall(search_ids(config.search_ef, db_seconds), truth)

    # Texts embedded by the test server (its vectors are random directions, not `args.data`).
    # The first pass fills the cache (one request per text: the scenario checks the server's
    # count) and warms the database; the second pass is timed.
    texts = [f"bench search query {n}: clutch plays and funny moments" for n in range(args.queries)]
    service = build_embedding_service(config)
    try:
        for text in texts:
            Clip.objects.similar_to(text, k=K, service=service)
        search_seconds = []
        for text in texts:
            began = time.perf_counter()
            Clip.objects.similar_to(text, k=K, service=service)
            search_seconds.append(time.perf_counter() - began)
    finally:
        service.close()

    summary = {
        "clips": args.clips,
        "dimensions": dims,
        "data": args.data,
        "storage": storage,
        "queries": args.queries,
        "ef_search": config.search_ef,
        "load_seconds": load_seconds,
        "index_build_seconds": build_seconds,
        "index_mib": index_bytes / 2**20,
        "exact_seconds": exact_seconds,
        "recall": search_recall,
        "search_seconds": sum(search_seconds),
        "search": percentiles_ms(search_seconds),
        "database_only": percentiles_ms(db_seconds),
        "index_used": plan_uses_index(queries[0], config, forced=True),
        "planner_picks_index_unforced": plan_uses_index(queries[0], config, forced=False),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
