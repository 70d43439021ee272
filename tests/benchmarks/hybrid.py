"""Hybrid search. Quality of vector, text and hybrid search on labelled queries, and
the latency of hybrid search at 1,000,000 clips.

Quality: the 1,000 demo clips (seed 0) embedded with the local model (all-MiniLM-L6-v2, 384
dimensions) in a database of their own (`bench_hybrid`, dropped after). Four groups of
queries; every query's relevant clips come from the generator's own fields, never from a list
typed by hand:

- handle: the handle of every broadcaster with at least 8 live clips, and of the four the issue
  names; relevant: that broadcaster's live clips;
- game: each game's name; relevant: the game's live clips;
- title: each phrase the generator fills titles with (maps, champions, bosses, items...) that
  at least 3 live clips carry; relevant: the live clips whose title holds it;
- paraphrase: a description of a game (PARAPHRASES) sharing no word with any clip, which the
  probe checks (no clip matches any of its words); relevant: the game's live clips.

recall@10 is the relevant clips in the top 10 over min(10, relevant clips); nDCG@10 has
binary gains. Latency: 1,000,000 demo clips (seed 0) with `search_probe.py`'s 64-dimensional
lowrank vectors (see search.py for why not 768), every 100th stale, both indexes built after
the load; the same queries through `similar_to(q, mode=...)` with cached query embeddings (an
untimed pass fills the cache through the test server), each mode timed in a pass of its own.

    python -m tests.benchmarks.hybrid --quality --out queries.json   # prints JSON
    python -m tests.benchmarks.hybrid --latency --queries queries.json --clips 1000000
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tests.benchmarks.environment import BenchDatabase, openai_test_server
from tests.benchmarks.measure import manage_py, run_measured
from tests.benchmarks.scenarios import Bench, Check, Outcome, Result, say
from tests.benchmarks.search import run_probe

if TYPE_CHECKING:  # the scenario runs without Django; the probes import it after setup()
    from embeddings.demo.generator import DemoClip
    from embeddings.service.embedding_service import EmbeddingService

DATABASE = "bench_hybrid"
K = 10
MODES = ("vector", "text", "hybrid")
GROUPS = ("handle", "game", "title", "paraphrase")
LATENCY_TARGET_MS = 50
QUALITY_CLIPS = 1000
MIN_HANDLE_CLIPS = 8
MIN_TITLE_CLIPS = 3
ISSUE_HANDLES = ("lunarfoxyt322", "GoldenGamerOW334", "pixelghost226", "saltyknight_861")
STALE_EVERY = 100
LOCAL_MODEL = {
    "EMBEDDING_PROVIDER": "local",
    "EMBEDDING_MODEL": "all-MiniLM-L6-v2",
    "EMBEDDING_DIMENSIONS": "384",
    "EMBEDDING_CACHE_TTL": "600",  # its query vectors leave Redis by themselves
}
# What each game is, in words no clip uses (the probe refuses one that shares a word).
PARAPHRASES = {
    "Valorant": "tactical agent shooter where attackers plant a spike",
    "League of Legends": "summoners brawl to destroy a nexus",
    "Minecraft": "blocky sandbox digging and crafting",
    "Counter-Strike 2": "terrorists against counterterrorism units with explosives",
    "Fortnite": "cartoon last man standing with ramps and walls",
    "Elden Ring": "punishing soulslike fantasy adventure",
    "Just Chatting": "streamer talking to the audience over a webcam",
    "Apex Legends": "respawn beacons and jumpmasters in a battle arena",
    "Grand Theft Auto V": "crime sandbox with carjackings and cops",
    "Dota 2": "defending a throne with wards and neutral creatures",
    "Overwatch 2": "colorful six versus six shooter escorting payloads",
    "Rocket League": "football with jet propelled automobiles",
    "Baldur's Gate 3": "tabletop dice fantasy roleplaying with companions",
    "Hollow Knight": "drawn insect kingdom metroidvania",
    "Chess": "checkered grid strategy with checkmates",
}


# The scenario (run by `make bench`, no Django here) ---------------------------------------


def hybrid_search(bench: Bench) -> Outcome:
    outcome = Outcome()
    clips, dimensions = bench.sizes.search_clips, bench.sizes.search_clips_dimensions
    database = BenchDatabase(bench.database.admin_url, DATABASE)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as tmp:
            queries = Path(tmp) / "queries.json"
            say(f"hybrid search quality, {QUALITY_CLIPS:,} demo clips, local model")
            quality = _quality(bench, database, queries)
            say(f"hybrid search latency, {clips:,} clips x {dimensions} dimensions")
            latency = _latency(bench, database, queries, clips, dimensions)
    finally:
        database.drop()
    _report(outcome, quality, latency)
    return outcome


def _quality(bench: Bench, database: BenchDatabase, queries: Path) -> dict:
    database.recreate()
    with openai_test_server(0) as server:  # unused by the local model; env() wants one
        env = bench.env(server, "hybrid-quality") | LOCAL_MODEL | {"DATABASE_URL": database.url}
        run_measured(manage_py("migrate", "--noinput", "-v", "0"), env=env).check("migrate")
        load = manage_py("load_demo_clips", "--count", str(QUALITY_CLIPS), "--seed", "0")
        run_measured(load, env=env).check("load_demo_clips")
        run_measured(manage_py("backfill_embeddings", "--json"), env=env).check("backfill")
        argv = [sys.executable, "-m", "tests.benchmarks.hybrid", "--quality", "--out", str(queries)]
        return run_measured(argv, env=env).check("hybrid quality probe").json()


def _latency(
    bench: Bench, database: BenchDatabase, queries: Path, clips: int, dimensions: int
) -> dict:
    argv = ["--latency", "--queries", str(queries), "--clips", str(clips)]
    label = f"hybrid{clips}x{dimensions}"
    return run_probe(bench, database, label, dimensions, "tests.benchmarks.hybrid", argv)


def _report(outcome: Outcome, quality: dict, latency: dict) -> None:
    for group in GROUPS:
        scores = quality["groups"][group]
        seconds = quality["seconds"][group]
        cells = ", ".join(
            f"{mode} {scores[mode]['recall']:.3f} / {scores[mode]['ndcg']:.3f}" for mode in MODES
        )
        outcome.results.append(
            Result(
                "10 hybrid",
                f"quality, {group} queries (recall@10 / nDCG@10)",
                scores["queries"],
                "queries",
                seconds,
                note=f"{cells}; {QUALITY_CLIPS:,} demo clips, all-MiniLM-L6-v2",
            )
        )
        for metric, label in (("recall", "recall@10"), ("ndcg", "nDCG@10")):
            hybrid, vector = scores["hybrid"][metric], scores["vector"][metric]
            outcome.checks.append(
                Check(
                    f"hybrid {label} >= vector's, {group} queries",
                    hybrid,
                    f">= {vector:.2f}",
                    hybrid >= vector - 1e-9,
                )
            )
    size = f"{latency['clips']:,} clips x {latency['dimensions']}"
    by_group = latency["hybrid_p95_ms_by_group"]
    for mode in MODES:
        timing = latency["modes"][mode]
        note = f"p50 {timing['p50_ms']:.1f} ms, p95 {timing['p95_ms']:.1f} ms"
        if mode == "hybrid":
            note += " (p95 by group: " + ", ".join(f"{g} {by_group[g]:.1f}" for g in GROUPS) + ")"
        outcome.results.append(
            Result(
                "10 hybrid",
                f"similar_to(text, mode={mode!r}), {size}, cached",
                latency["queries"],
                "queries",
                timing["seconds"],
                note=note,
            )
        )
    plans = latency["indexes_by_group"]
    outcome.results.append(
        Result(
            "10 hybrid",
            f"load and index, {size}",
            latency["clips"],
            "clips",
            latency["load_seconds"] + latency["index_seconds"],
            note=(
                f"COPY {latency['load_seconds']:.0f} s, GIN {latency['gin_seconds']:.0f} s, "
                f"HNSW {latency['hnsw_seconds']:.0f} s; hybrid plan's indexes: "
                + ", ".join(f"{g} {plans[g]}" for g in GROUPS)
            ),
        )
    )
    p95 = latency["modes"]["hybrid"]["p95_ms"]
    outcome.checks.append(
        Check(
            f"hybrid p95 at {latency['clips']:,} clips (ms)",
            p95,
            f"< {LATENCY_TARGET_MS}",
            p95 < LATENCY_TARGET_MS if latency["clips"] >= 1_000_000 else None,
        )
    )
    on_hnsw = all("HNSW" in plan for plan in plans.values())
    if not on_hnsw or latency["api_requests"] != latency["queries"]:
        outcome.checks.append(
            Check(f"hybrid {size}: cached queries, vector side on HNSW", 0.0, "= 1", False)
        )


# The probes (a Django process on the bench database) --------------------------------------


def labelled_queries() -> dict[str, list[tuple[str, set[int]]]]:
    """Every group's (query, relevant clip ids), from the loaded demo clips' own fields."""
    from embeddings.demo.generator import GAMES
    from embeddings.models import Clip

    rows = list(Clip.objects.live().values("id", "title", "broadcaster_name", "game_name"))
    per_broadcaster = Counter(row["broadcaster_name"] for row in rows)
    handles = {h for h, count in per_broadcaster.items() if count >= MIN_HANDLE_CLIPS}
    groups: dict[str, list[tuple[str, set[int]]]] = {group: [] for group in GROUPS}
    for handle in sorted(handles | set(ISSUE_HANDLES)):
        groups["handle"].append(
            (handle, _ids(rows, lambda r, h=handle: r["broadcaster_name"] == h))
        )
    for game in GAMES:
        groups["game"].append((game.name, _ids(rows, lambda r, g=game.name: r["game_name"] == g)))
    phrases = sorted(
        {value for game in GAMES for values in game.fillers.values() for value in values}
    )
    for phrase in phrases:
        words = re.compile(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)")
        relevant = _ids(rows, lambda r, w=words: bool(w.search(r["title"].lower())))
        if len(relevant) >= MIN_TITLE_CLIPS:
            groups["title"].append((phrase, relevant))
    for game, text in PARAPHRASES.items():
        groups["paraphrase"].append((text, _ids(rows, lambda r, g=game: r["game_name"] == g)))
    return groups


def _ids(rows: list[dict], keep: Callable[[dict], bool]) -> set[int]:
    return {row["id"] for row in rows if keep(row)}


def shares_a_word(text: str) -> bool:
    """Whether any clip holds any word of `text` (as the english configuration stems it)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM clips, unnest(tsvector_to_array(to_tsvector('english', %s)))"
            " AS word WHERE search_document @@ quote_literal(word)::tsquery",
            [text],
        )
        return cursor.fetchone()[0] > 0


def recall_and_ndcg(found: list[int], relevant: set[int]) -> tuple[float, float]:
    ideal = min(K, len(relevant))
    gains = [1.0 if pk in relevant else 0.0 for pk in found[:K]]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    best = sum(1 / math.log2(rank + 2) for rank in range(ideal))
    return sum(gains) / ideal, dcg / best


def quality(out: Path) -> dict:
    from embeddings.app_settings import embedding_settings
    from embeddings.models import Clip
    from embeddings.service.factory import build_embedding_service

    groups = labelled_queries()
    for text, _ in groups["paraphrase"]:
        if shares_a_word(text):
            raise RuntimeError(f"the paraphrase {text!r} shares a word with some clip")
    service = build_embedding_service(embedding_settings(), concurrency=1)
    summary: dict = {"groups": {}, "seconds": {}}
    try:
        for group, queries in groups.items():
            started = time.perf_counter()
            scores = {mode: [] for mode in MODES}
            for text, relevant in queries:
                for mode in MODES:
                    found = Clip.objects.similar_to(text, k=K, mode=mode, service=service)
                    scores[mode].append(recall_and_ndcg([clip.pk for clip in found], relevant))
            summary["seconds"][group] = time.perf_counter() - started
            summary["groups"][group] = {"queries": len(queries)} | {
                mode: {
                    "recall": sum(r for r, _ in pairs) / len(pairs),
                    "ndcg": sum(n for _, n in pairs) / len(pairs),
                }
                for mode, pairs in scores.items()
            }
    finally:
        service.close()
    out.write_text(json.dumps({group: [t for t, _ in qs] for group, qs in groups.items()}))
    return summary


def demo_clip_text(clip: "DemoClip") -> str:
    """The embedded text in the README's format, so the COPY can write current vectors; the
    load checks it against PostgreSQL's own (`text_hash`)."""
    title, broadcaster, creator = (
        clip.title.strip(" "),
        clip.broadcaster_name.strip(" "),
        clip.creator_name.strip(" "),
    )
    game = (clip.game_name or "").strip(" ")
    parts = (
        f"Title: {title}" if title else "",
        f"Broadcaster: {broadcaster}" if broadcaster else "",
        f"Clipped by: {creator}" if creator and creator != broadcaster else "",
        f"Game: {game}" if game else "",
    )
    return ". ".join(part for part in parts if part)


def load(url: str, count: int, dimensions: int, model: str) -> float:
    """Binary COPY of `count` demo clips with lowrank vectors, every STALE_EVERY-th stale."""
    import psycopg
    from pgvector.psycopg import register_vector

    from embeddings.clip_text import text_hash
    from embeddings.demo.generator import ROW_COLUMNS, generate_demo_clips
    from tests.benchmarks.search_probe import vector_chunks

    columns = ", ".join(
        (
            "id",
            *ROW_COLUMNS,
            "embedding",
            "embedding_model",
            "embedding_generated_at",
            "embedding_dimensions",
            "embedding_text_hash",
            "embedding_attempts",
        )
    )
    types = ["int8", "text", "text", "text", "text", "text", "text", "bool", "timestamptz"]
    types += ["vector", "text", "timestamptz", "int4", "text", "int4"]
    now = datetime.now(UTC)
    clips = generate_demo_clips(count, seed=0, now=now)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy(f"COPY clips ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for start, matrix in vector_chunks(count, dimensions, "lowrank"):
                for offset, vector in enumerate(matrix):
                    clip_id, clip = start + offset + 1, next(clips)
                    stale = clip_id % STALE_EVERY == 0
                    copy.write_row(
                        (
                            clip_id,
                            *clip.row(),
                            vector,
                            model,
                            now,
                            dimensions,
                            "0" * 32 if stale else text_hash(demo_clip_text(clip)),
                            1,
                        )
                    )
        conn.execute("SELECT setval('clips_id_seq', %s)", [count])
        current = conn.execute(
            "SELECT count(*) FROM clips WHERE embedding_text_hash = text_hash"
        ).fetchone()[0]
    if current != count - count // STALE_EVERY:
        raise RuntimeError(f"{current} current clips of {count}: the text format drifted?")
    return time.perf_counter() - started


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] * 1000

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "seconds": sum(seconds)}


def indexes_in_plan(text: str, service: "EmbeddingService") -> str:
    from django.db import connection, transaction

    from embeddings.app_settings import embedding_settings
    from embeddings.models import Clip
    from embeddings.search.hybrid import TextQuery, hybrid_sql
    from embeddings.search.vector import SEARCH_SETTINGS_SQL, embed_query

    config = embedding_settings()
    vector = embed_query(text, config, service)
    sql, params = hybrid_sql(Clip.objects.all(), vector, TextQuery(text), K, config=config)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS_SQL, [str(config.search_ef)])
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    names = {"HNSW": "clips_embedding_hnsw", "GIN": "clips_search_document_gin"}
    return "+".join(label for label, index in names.items() if index in plan) or "none"


def latency(queries_file: Path, count: int) -> dict:
    from django.db import connection

    from embeddings.app_settings import embedding_settings
    from embeddings.backfill.index import build_hnsw_index, drop_hnsw_index
    from embeddings.models import Clip
    from embeddings.service.factory import build_embedding_service

    config = embedding_settings()
    gin = next(index for index in Clip._meta.indexes if index.name == "clips_search_document_gin")
    drop_hnsw_index()
    with connection.schema_editor() as editor:
        editor.remove_index(Clip, gin)
    load_seconds = load(os.environ["DATABASE_URL"], count, config.dimensions, config.model)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '8GB'")  # the HNSW build's ceiling too
    with connection.schema_editor() as editor:
        editor.add_index(Clip, gin)
    gin_seconds = time.perf_counter() - started
    build_hnsw_index()
    hnsw_seconds = time.perf_counter() - started - gin_seconds
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE clips")

    groups = json.loads(queries_file.read_text())
    texts = [(group, text) for group in GROUPS for text in groups[group]]
    service = build_embedding_service(config)
    try:
        # An untimed pass fills the cache (one request per text) and warms the database for
        # every mode; then each mode is timed in a pass of its own, so none warms another's.
        for mode in MODES:
            for _, text in texts:
                Clip.objects.similar_to(text, k=K, mode=mode, service=service)
        timings: dict[str, list[float]] = {mode: [] for mode in MODES}
        for mode in MODES:
            for _, text in texts:
                began = time.perf_counter()
                Clip.objects.similar_to(text, k=K, mode=mode, service=service)
                timings[mode].append(time.perf_counter() - began)
        by_group: dict[str, list[float]] = {group: [] for group in GROUPS}
        for (group, _), seconds in zip(texts, timings["hybrid"], strict=True):
            by_group[group].append(seconds)
        plans = {group: indexes_in_plan(groups[group][0], service) for group in GROUPS}
    finally:
        service.close()
    return {
        "clips": count,
        "dimensions": config.dimensions,
        "queries": len(texts),
        "load_seconds": load_seconds,
        "gin_seconds": gin_seconds,
        "hnsw_seconds": hnsw_seconds,
        "index_seconds": gin_seconds + hnsw_seconds,
        "modes": {mode: percentiles_ms(seconds) for mode, seconds in timings.items()},
        "hybrid_p95_ms_by_group": {
            group: percentiles_ms(seconds)["p95_ms"] for group, seconds in by_group.items()
        },
        "indexes_by_group": plans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe = parser.add_mutually_exclusive_group(required=True)
    probe.add_argument("--quality", action="store_true", help="score the labelled queries")
    probe.add_argument("--latency", action="store_true", help="load --clips and time them")
    parser.add_argument("--out", type=Path, help="--quality: write the query texts here")
    parser.add_argument("--queries", type=Path, help="--latency: the query texts to time")
    parser.add_argument("--clips", type=int, default=1_000_000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    if args.quality:
        print(json.dumps(quality(args.out)))
    else:
        print(json.dumps(latency(args.queries, args.clips)))


if __name__ == "__main__":
    main()
