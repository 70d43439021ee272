"""Another version of the vectors served without search going dark, and vectors
stored in half precision.

- `switch_embeddings`: `switch_clips` demo clips embedded (`--rebuild-index`: the HNSW index
  is in place at its end), then `manage.py switch_embeddings` to another model at the same
  size, timed as a subprocess, while `steady_search.py` searches without pause in another.
  Its latencies a few seconds before the switch and during it, its errors (the target: none),
  and how often a clip's own text did not bring that clip back first (for information: HNSW
  may miss, before as during).
- `halfvec_vs_vector`: `storage_vectors` lowrank unit vectors x 1536 written by
  `search_probe.py` once into a `vector(1536)` column and once into `halfvec(1536)`
  (EMBEDDING_STORAGE at migrate time): the HNSW index's size and build time, and recall@10
  against exact search.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tests.benchmarks.environment import BenchDatabase, openai_test_server
from tests.benchmarks.measure import REPO_ROOT, Measured, manage_py, run_measured
from tests.benchmarks.scenarios import DIMENSIONS, Bench, Check, Outcome, Result, say
from tests.benchmarks.search import RECALL_TARGET, run_probe
from tests.benchmarks.search_probe import percentiles_ms

SWITCH_DATABASE = "bench_switch"
STORAGE_DATABASE = "bench_storage"
SEARCH_TEXTS = 200
STORAGE_DIMENSIONS = 1536
STORAGES = ("vector", "halfvec")
INDEX_RATIO_TARGET = 0.6  # halfvec halves each element's vector; the graph's links stay


def switch_embeddings(bench: Bench) -> Outcome:
    outcome = Outcome()
    count, idle = bench.sizes.switch_clips, bench.sizes.switch_idle_seconds
    target_model = f"{bench.marker}-switch-to"
    database = BenchDatabase(bench.database.admin_url, SWITCH_DATABASE)
    try:
        with openai_test_server(0) as server:
            say(f"switch_embeddings, {count:,} clips: first backfill")
            clips = database.prepare(count, hnsw_index=True)
            env = bench.env(server, "switch-from") | {"DATABASE_URL": database.url}
            run_measured(manage_py("backfill_embeddings", "--rebuild-index"), env=env).check(
                "backfill_embeddings"
            )
            outcome.require_complete(
                "before the switch", database.embedded_live_clips(), clips.live
            )
            server.reset()
            say(f"switch_embeddings, {count:,} clips, searched meanwhile ({idle} s idle first)")
            with _searching(env) as searcher:
                time.sleep(idle)
                began = time.time()
                switch = run_measured(
                    manage_py(
                        "switch_embeddings",
                        "--model",
                        target_model,
                        "--dimensions",
                        str(DIMENSIONS),
                    ),
                    env=env,
                    timeout=3600,
                ).check("switch_embeddings")
                ended = time.time()
            requests = server.stats()["requests"]
        switched = int(
            database.scalar(
                "SELECT count(*) FROM clips WHERE NOT is_removed AND embedding_model = %s"
                " AND embedding_text_hash = text_hash",
                [target_model],
            )
            or 0
        )
    finally:
        database.drop()
        bench.forget_cache()
    outcome.require_complete("after the switch", switched, clips.live)
    outcome.results.append(
        Result(
            "12 switch",
            f"switch_embeddings, {count:,} clips x {DIMENSIONS}, to another model",
            switched,
            "clips",
            switch.seconds,
            switch.peak_rss_mib,
            f"{requests} API requests; {_steps(switch)}",
        )
    )
    records = searcher.result["records"]
    before = SearchWindow("before the switch", [r for r in records if r[0] < began])
    during = SearchWindow("during the switch", [r for r in records if began <= r[0] <= ended])
    outcome.results += [before.result(began - records[0][0]), during.result(ended - began)]
    outcome.checks.append(
        Check("search errors during the switch", during.errors, "= 0", during.errors == 0)
    )
    for window in (before, during):
        outcome.checks += [
            Check(f"search p95 {window.name} (ms)", window.latency["p95_ms"], "-", None),
            Check(f"own clip not first {window.name}", window.misses, "-", None),
        ]
    if searcher.result["errors"]:
        say(f"search errors, the first ones: {searcher.result['errors']}")
    return outcome


def _steps(switch: Measured) -> str:
    """The step durations the command prints ("  filling: 12.3s")."""
    steps = [line.strip() for line in switch.stdout.splitlines() if line.startswith("  ")]
    return ", ".join(steps)


@dataclass(frozen=True)
class SearchWindow:
    """The searcher's records (start, seconds, outcome) that began in one stretch of time."""

    name: str
    records: list

    @property
    def latency(self) -> dict[str, float]:
        if not self.records:
            return dict.fromkeys(("p50_ms", "p95_ms", "mean_ms"), 0.0)
        return percentiles_ms([r[1] for r in self.records])

    @property
    def errors(self) -> int:
        return sum(1 for r in self.records if r[2] == "error")

    @property
    def misses(self) -> int:
        return sum(1 for r in self.records if r[2] == "miss")

    def result(self, seconds: float) -> Result:
        latency = self.latency
        return Result(
            "12 switch",
            f"similar_to(text, k=10) {self.name}",
            len(self.records),
            "queries",
            seconds,
            note=(
                f"one searcher: p50 {latency['p50_ms']:.1f} ms, p95 "
                f"{latency['p95_ms']:.1f} ms; {self.misses} own clip not first, "
                f"{self.errors} errors"
            ),
        )


class _searching:
    """`steady_search.py` in a subprocess from warm to the block's end; then `result`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.result: dict = {}

    def __enter__(self) -> "_searching":
        self.stderr = tempfile.TemporaryFile(mode="w+")
        argv = [sys.executable, "-m", "tests.benchmarks.steady_search"]
        self.process = subprocess.Popen(
            [*argv, "--texts", str(SEARCH_TEXTS)],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        if self.process.stdout.readline().strip() != "warm":
            self._fail("did not get warm")
        return self

    def __exit__(self, error_type: type | None, *_: object) -> None:
        if error_type is not None:  # the switch failed: its error is the one to see
            self.process.kill()
            self.process.wait()
            return
        stdout, _ = self.process.communicate(timeout=120)  # closes stdin: the searcher stops
        if self.process.returncode != 0:
            self._fail(f"exited with {self.process.returncode}")
        self.result = json.loads(stdout)
        self.stderr.close()

    def _fail(self, what: str) -> None:
        self.process.kill()
        self.process.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"steady_search {what}:\n{self.stderr.read()[-2000:]}")


def storage_builds(
    bench: Bench, *, vectors: int, dimensions: int, queries: int, database_name: str, label: str
) -> dict[str, dict]:
    """`search_probe`'s summary of an HNSW index over `vectors` lowrank vectors, built once as
    each storage, in a database of its own (dropped after)."""
    database = BenchDatabase(bench.database.admin_url, database_name)
    summaries: dict[str, dict] = {}
    try:
        for storage in STORAGES:
            say(f"{label}: HNSW index, {vectors:,} x {dimensions} lowrank vectors as {storage}")
            argv = ["--clips", str(vectors), "--queries", str(queries), "--data", "lowrank"]
            summaries[storage] = run_probe(
                bench,
                database,
                f"{label}-{storage}",
                dimensions,
                "tests.benchmarks.search_probe",
                argv,
                settings={"EMBEDDING_STORAGE": storage},
            )
            if summaries[storage]["storage"] != storage:
                raise RuntimeError(f"the column is {summaries[storage]['storage']}, not {storage}")
    finally:
        database.drop()
    return summaries


def halfvec_vs_vector(bench: Bench) -> Outcome:
    outcome = Outcome()
    vectors, queries = bench.sizes.storage_vectors, bench.sizes.search_queries
    summaries = storage_builds(
        bench,
        vectors=vectors,
        dimensions=STORAGE_DIMENSIONS,
        queries=queries,
        database_name=STORAGE_DATABASE,
        label="storage",
    )
    for storage, s in summaries.items():
        search = s["database_only"]
        outcome.results.append(
            Result(
                "13 storage",
                f"HNSW index build, {vectors:,} x {STORAGE_DIMENSIONS} {storage}",
                s["clips"],
                "vectors",
                s["index_build_seconds"],
                note=(
                    f"{s['index_mib']:,.1f} MiB; recall@10 {s['recall']:.3f} at ef_search "
                    f"{s['ef_search']}, p50 {search['p50_ms']:.1f} ms, p95 "
                    f"{search['p95_ms']:.1f} ms over {s['queries']} queries"
                ),
            )
        )
        if not s["index_used"]:  # an exact scan would make any recall 1.0
            outcome.checks.append(Check(f"{storage}: searches on the HNSW index", 0, "= 1", False))
    half, full = summaries["halfvec"], summaries["vector"]
    ratio = half["index_mib"] / full["index_mib"]
    outcome.checks += [
        Check(
            "recall@10 halfvec(1536) vs exact float32",
            half["recall"],
            f">= {RECALL_TARGET:.2f}",
            half["recall"] >= RECALL_TARGET,
        ),
        Check("recall@10 vector(1536), for comparison", full["recall"], "-", None),
        Check(
            "HNSW index size halfvec / vector",
            ratio,
            f"<= {INDEX_RATIO_TARGET}",
            ratio <= INDEX_RATIO_TARGET,
        ),
        Check(
            "HNSW build time halfvec / vector",
            half["index_build_seconds"] / full["index_build_seconds"],
            "-",
            None,
        ),
    ]
    return outcome
