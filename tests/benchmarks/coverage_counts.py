"""The coverage counts kept by triggers (docs/coverage-counts.md): what the site's writes pay
for them, and what the coverage page and `/metrics` cost at one and two times the search
size (1,000,000 and 2,000,000 clips in a full run).

Writes: single-row INSERT and UPDATE (raw SQL, autocommit) and a 1,000-row multi-row INSERT,
timed with the triggers enabled and disabled in rounds on the larger table, each state first
in every other round; the median round of each counts. Reads: `coverage_report` (the page's
numbers) and a /metrics collection, in a probe process of their own
(`python -m tests.benchmarks.coverage_counts`).
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import psycopg

from tests.benchmarks.environment import BenchDatabase
from tests.benchmarks.measure import run_measured
from tests.benchmarks.scenarios import DIMENSIONS, Bench, Check, Outcome, Result, say

DATABASE = "bench_coverage_counts"
MODEL = "bench-coverage"
PAGE_P95_MS, METRICS_P95_MS, GROWTH = 150.0, 100.0, 1.3
WRITE_OVERHEAD = 0.05  # what the site's writes may pay for the counts
ROUNDS, SINGLE_ROWS, MULTI_ROW, MULTI_STATEMENTS = 8, 300, 1_000, 10
READS = 40
TRIGGERS = ("insert", "update", "delete", "truncate")
INSERT = (
    "INSERT INTO clips (twitch_clip_id, title, broadcaster_name, creator_name, game_name,"
    " is_removed, created_at, embedding_attempts) VALUES "
)


def coverage_counts(bench: Bench) -> Outcome:
    outcome = Outcome()
    env = {"EMBEDDING_DIMENSIONS": str(DIMENSIONS), "EMBEDDING_MODEL": MODEL}
    database = BenchDatabase(bench.database.admin_url, DATABASE)
    reads = {}
    try:
        for clips in (bench.sizes.search_clips, 2 * bench.sizes.search_clips):
            say(f"coverage counts: {clips:,} clips")
            database.prepare(clips, hnsw_index=False, env=env)
            _give_vectors(database)
            command = [sys.executable, "-m", __name__, "--reads", str(READS)]
            probe = run_measured(command, env={**env, "DATABASE_URL": database.url})
            reads[clips] = probe.check("coverage counts probe").json()
        say("coverage counts: the site's writes with and without the triggers")
        writes = _write_costs(database)
    finally:
        database.drop()
    _report_reads(outcome, reads)
    _report_writes(outcome, writes)
    return outcome


def _give_vectors(database: BenchDatabase) -> None:
    """A third of the clips embedded over the last 40 days, 1% of those failed since, as a
    backfill leaves them (through the triggers, in 100,000-row statements)."""
    vector = "[" + ",".join(["0.03"] * DIMENSIONS) + "]"
    top = int(database.scalar("SELECT coalesce(max(id), 0) FROM clips"))
    for start in range(0, top, 100_000):
        database.execute(
            f"UPDATE clips SET embedding = '{vector}', embedding_model = '{MODEL}',"
            f" embedding_dimensions = {DIMENSIONS}, embedding_text_hash = text_hash,"
            " embedding_generated_at = now() - (id % 40) * interval '1 day',"
            " embedding_error = CASE WHEN id % 300 = 0 THEN 'timeout' END"
            f" WHERE id % 3 = 0 AND id > {start} AND id <= {start + 100_000}"
        )
    database.execute("VACUUM ANALYZE clips", "CHECKPOINT")


def _timed(conn: psycopg.Connection, statements: list[tuple[str, list]]) -> float:
    began = time.perf_counter()
    for statement, params in statements:
        conn.execute(statement, params)
    return time.perf_counter() - began


def _write_costs(database: BenchDatabase) -> dict[str, dict[str, float]]:
    """Rows per second of each write, by triggers "on" and "off" (median of the rounds)."""
    rng = np.random.default_rng(27)
    top = int(database.scalar("SELECT max(id) FROM clips"))
    serial = iter(range(10**9))

    def one_row() -> list[tuple[str, list]]:
        return [
            (INSERT + "(%s, 'Bench write', 'b', 'c', 'g', false, now(), 0)", [f"w-{next(serial)}"])
            for _ in range(SINGLE_ROWS)
        ]

    def updates() -> list[tuple[str, list]]:
        ids = rng.integers(1, top, SINGLE_ROWS)
        return [("UPDATE clips SET title = title || '.' WHERE id = %s", [int(i)]) for i in ids]

    def multi_row() -> list[tuple[str, list]]:
        values = ", ".join(["(%s, 'Bench bulk', 'b', 'c', 'g', false, now(), 0)"] * MULTI_ROW)
        return [
            (INSERT + values, [f"m-{next(serial)}" for _ in range(MULTI_ROW)])
            for _ in range(MULTI_STATEMENTS)
        ]

    kinds: dict[str, tuple[Callable[[], list], int]] = {
        "single-row INSERT": (one_row, SINGLE_ROWS),
        "single-row UPDATE": (updates, SINGLE_ROWS),
        "1,000-row INSERT": (multi_row, MULTI_ROW * MULTI_STATEMENTS),
    }
    seconds: dict[str, dict[str, list[float]]] = {k: {"on": [], "off": []} for k in kinds}
    with psycopg.connect(database.url, autocommit=True) as conn:
        for round_ in range(ROUNDS):
            # Each state first in every other round; one untimed statement of each kind after
            # the toggle (ALTER TABLE drops the session's cached plans).
            for state in ("on", "off") if round_ % 2 else ("off", "on"):
                verb = "ENABLE" if state == "on" else "DISABLE"
                for name in TRIGGERS:
                    conn.execute(f"ALTER TABLE clips {verb} TRIGGER clip_embeddings_count_{name}")
                for kind, (statements, _) in kinds.items():
                    _timed(conn, statements()[:1])
                    seconds[kind][state].append(_timed(conn, statements()))
        for name in TRIGGERS:
            conn.execute(f"ALTER TABLE clips ENABLE TRIGGER clip_embeddings_count_{name}")
    return {
        kind: {state: rows / statistics.median(s) for state, s in seconds[kind].items()}
        for kind, (_, rows) in kinds.items()
    }


def _report_reads(outcome: Outcome, reads: dict[int, dict]) -> None:
    first = min(reads)
    for clips, s in reads.items():
        for what, key, target in (
            ("coverage page numbers", "page", PAGE_P95_MS),
            ("/metrics collection", "metrics", METRICS_P95_MS),
        ):
            p50, p95 = s[key]["p50_ms"], s[key]["p95_ms"]
            outcome.results.append(
                Result(
                    "27 coverage counts",
                    f"{what}, {clips:,} clips",
                    1,
                    "read",
                    p50 / 1000,
                    note=f"p50 {p50:.1f} ms, p95 {p95:.1f} ms over {READS};"
                    f" full scan {s['scan_ms']:.0f} ms",
                )
            )
            outcome.checks.append(
                Check(f"{what} p95 at {clips:,} clips (ms)", p95, f"<= {target}", p95 <= target)
            )
            if clips != first:
                growth = p95 / reads[first][key]["p95_ms"]
                outcome.checks.append(
                    Check(
                        f"{what} p95, {clips:,} against {first:,} clips",
                        growth,
                        f"<= {GROWTH}x",
                        growth <= GROWTH,
                    )
                )
        outcome.results.append(
            Result(
                "27 coverage counts",
                f"base count (migrate's, reconcile --fix), {clips:,} clips",
                clips,
                "clips",
                s["rebase_seconds"],
            )
        )


def _report_writes(outcome: Outcome, writes: dict[str, dict[str, float]]) -> None:
    for kind, rates in writes.items():
        overhead = 1 - rates["on"] / rates["off"]
        outcome.results.append(
            Result(
                "27 coverage counts",
                f"{kind}, triggers on",
                1,
                "rows/s",
                1 / rates["on"],
                note=f"{rates['on']:,.0f} rows/s against {rates['off']:,.0f} without",
            )
        )
        outcome.checks.append(
            Check(
                f"{kind}: throughput lost to the count triggers",
                overhead,
                f"<= {WRITE_OVERHEAD:.0%}",
                overhead <= WRITE_OVERHEAD,
            )
        )


def _percentiles_ms(call: Callable[[], object], times: int) -> dict[str, float]:
    call()  # warm-up
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return {
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p95_ms": float(np.percentile(seconds, 95) * 1000),
    }


def main() -> None:
    """The probe: run inside Django against DATABASE_URL; prints one JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=READS)
    args = parser.parse_args()
    import django

    django.setup()
    from prometheus_client import generate_latest

    from embeddings.coverage import coverage_report
    from embeddings.coverage.ledger import rebase
    from embeddings.coverage.tally import scanned_tally
    from embeddings.metrics import REGISTRY
    from embeddings.models import served_settings

    config = served_settings()
    began = time.perf_counter()
    rebase()
    rebase_seconds = time.perf_counter() - began
    page = _percentiles_ms(lambda: coverage_report(config.model, config.dimensions), args.reads)
    metrics = _percentiles_ms(lambda: generate_latest(REGISTRY), args.reads)
    scan = _percentiles_ms(
        lambda: coverage_report(config.model, config.dimensions, tally_of=scanned_tally), 3
    )
    summary = {"page": page, "metrics": metrics, "scan_ms": scan["p50_ms"]}
    print(json.dumps({**summary, "rebase_seconds": rebase_seconds}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    main()
