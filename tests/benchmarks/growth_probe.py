"""The read paths of the growth table at one size; run by `growth.py`.

Against the migrated database of DATABASE_URL: `hybrid.latency` loads `--clips` demo clips
with lowrank vectors by binary COPY (every 100th stale), builds the GIN and HNSW indexes and
times `similar_to` in each mode with cached query embeddings. Then, on the same table:

- the admin coverage page and a `/metrics` scrape through Django's test client;
- recall@10 of `nearest_clips` (HNSW) for lowrank query vectors, and of hybrid search
  (`similar_to(mode="hybrid")`), each against the same SQL with index scans off (exact);
- the relations' sizes (bytes per row, for the 10M plan);
- the site's insert cost: single-row raw SQL INSERTs into clips, autocommit, as a site adds a
  clip with everything the tool installed (triggers, GIN and HNSW indexes).

    python -m tests.benchmarks.growth_probe --clips 100000 --queries queries.json
"""

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tests.benchmarks.hybrid import GROUPS, K, latency
from tests.benchmarks.search_probe import SEED, page_ms, percentiles_ms, unit_vectors

RENDERS = 20
RECALL_QUERIES = 50
INSERTS = 200
EXACT = "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"
SIZES_SQL = """
    SELECT pg_table_size('clips'), pg_relation_size('clips_embedding_hnsw'),
        pg_indexes_size('clips') - pg_relation_size('clips_embedding_hnsw')
"""


def overlap(found: list[int], truth: list[int]) -> float:
    return len(set(found) & set(truth)) / max(1, min(K, len(truth)))


def exact_ids(sql: str, params: list) -> list[int]:
    """The ids a search statement returns with the indexes off: every row compared."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(EXACT)
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def vector_recall() -> float:
    """`nearest_clips` for lowrank queries drawn like the data, against exact search."""
    from embeddings.app_settings import embedding_settings
    from embeddings.models import Clip
    from embeddings.search.vector import nearest_clips, search_queryset

    config = embedding_settings()
    queries = unit_vectors(
        np.random.default_rng([SEED, 1, 0]), RECALL_QUERIES, config.dimensions, "lowrank"
    )
    scores = []
    for vector in queries:
        found = nearest_clips(
            Clip.objects.all(), vector, K, config=config, ef_search=config.search_ef
        )
        exact = search_queryset(Clip.objects.all(), vector, K, config=config).values("id")
        truth = exact_ids(*exact.query.sql_with_params())
        scores.append(overlap([clip.pk for clip in found], truth))
    return float(np.mean(scores))


def hybrid_recall(texts: list[str]) -> float:
    """`similar_to(mode="hybrid")` against the hybrid statement on the same (cached) query
    vector with the indexes off."""
    from embeddings.app_settings import embedding_settings
    from embeddings.models import Clip
    from embeddings.search.hybrid import TextQuery, hybrid_sql
    from embeddings.search.vector import embed_query
    from embeddings.service.factory import build_embedding_service

    config = embedding_settings()
    service = build_embedding_service(config)
    scores = []
    try:
        for text in texts:
            found = Clip.objects.similar_to(text, k=K, mode="hybrid", service=service)
            vector = embed_query(text, config, service)
            sql, params = hybrid_sql(Clip.objects.all(), vector, TextQuery(text), K, config=config)
            scores.append(overlap([clip.pk for clip in found], exact_ids(sql, params)))
    finally:
        service.close()
    return float(np.mean(scores))


def insert_ms(url: str, count: int) -> dict[str, float]:
    """Single-row INSERTs of new demo clips (no vector yet), each its own transaction."""
    import psycopg

    from embeddings.demo.generator import generate_demo_clips
    from embeddings.demo.loader import COPY_COLUMNS  # the demo fields, embedding_attempts

    columns = ", ".join(COPY_COLUMNS)
    statement = f"INSERT INTO clips ({columns}) VALUES ({', '.join(['%s'] * len(COPY_COLUMNS))})"
    clips = generate_demo_clips(INSERTS, seed=1, now=datetime.now(UTC), start=count)
    seconds = []
    with psycopg.connect(url, autocommit=True) as conn:
        for number, clip in enumerate(clips):
            row = (f"growth-insert-{number}", *clip.row()[1:], 0)
            began = time.perf_counter()
            conn.execute(statement, row)
            seconds.append(time.perf_counter() - began)
    return percentiles_ms(seconds)


def relation_sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(SIZES_SQL)
        table, hnsw, other = cursor.fetchone()
    return {"table_bytes": table, "hnsw_bytes": hnsw, "other_index_bytes": other}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="hybrid.py's query file")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from embeddings.backfill.index import GRAPH_BYTES_PER_VECTOR

    summary = latency(args.queries, args.clips)
    groups = json.loads(args.queries.read_text())
    texts = [text for group in GROUPS for text in groups[group]]
    summary |= {
        "coverage_page": page_ms("/admin/embeddings/clip/coverage/", RENDERS),
        "metrics": page_ms("/metrics", RENDERS),
        "vector_recall": vector_recall(),
        "hybrid_recall": hybrid_recall(texts),
        **relation_sizes(),
        "graph_overhead_bytes": GRAPH_BYTES_PER_VECTOR,
        "insert": insert_ms(os.environ["DATABASE_URL"], args.clips),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
