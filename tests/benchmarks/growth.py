"""How the tool grows, from 100,000 clips to the largest this machine holds, and what
10,000,000 clips would take (`growth_plan.py`); written to docs/performance-growth.md.

At each of `growth_sizes` (run.py --growth-sizes), with vectors of `search_clips_dimensions`
(64, run.py --search-dimensions; see search.py for why not 768 on 2 cores):

- write paths, up to `growth_write_max` clips: demo clips loaded without vectors on a freshly
  migrated table (its HNSW index in place), then `backfill_embeddings` with default flags
  (a first fill: it drops the index, writes, rebuilds it), `--force` over the embedded,
  indexed table (bulk: build rows, then a swap), then `switch_embeddings` to another model;
  test server at 0 ms. Clips/s of each subprocess's wall time, the backfill's peak RSS;
- read paths (`growth_probe.py`): demo clips with lowrank vectors by COPY, both indexes
  built; coverage page, /metrics, vector and hybrid search, recall@10 against exact search,
  relation sizes, single-row INSERT latency.

For the plan, at the smallest size: the HNSW build over vector(768) and halfvec(768) (the
served size; `search_probe.py`), and a backfill at 768 dimensions with the server answering
in 300 ms, no index (the per-process rate a worker gets; tokens per clip; clips per request).
"""

import dataclasses
import json
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmarks.environment import BenchDatabase, machine_lines, openai_test_server
from tests.benchmarks.growth_plan import Growth, SizeRun, page, table_lines
from tests.benchmarks.measure import REPO_ROOT, manage_py, run_measured
from tests.benchmarks.scenarios import DIMENSIONS, Bench, Outcome, PipelineRun, run_command, say
from tests.benchmarks.search import run_probe
from tests.benchmarks.switching import storage_builds

READ_DATABASE = "bench_growth"
# Its own: another bench run ending drops `bench_clips`, the default one, under a long run.
WRITE_DATABASE = "bench_growth_writes"
SAMPLE_DATABASE = "bench_growth_sample"
PAGE = REPO_ROOT / "docs" / "performance-growth.md"
SAMPLE_QUERIES = 20
TITLE_PHRASES = 10
PACE_LATENCY_MS = 300
WRITE_TIMEOUT_S = 4 * 3600
SWITCHED = (
    "SELECT count(*) FROM clips WHERE NOT is_removed AND embedding_model = %s"
    " AND embedding_text_hash = text_hash"
)


def growth(bench: Bench) -> Outcome:
    own = BenchDatabase(bench.database.admin_url, WRITE_DATABASE)
    try:
        return _growth(dataclasses.replace(bench, database=own))
    finally:
        own.drop()


def _growth(bench: Bench) -> Outcome:
    sizes = bench.sizes
    g = Growth(
        sizes=sizes.growth_sizes,
        write_max=sizes.growth_write_max,
        dimensions=sizes.search_clips_dimensions,
        served_dimensions=DIMENSIONS,
    )
    smallest = min(g.sizes)
    # Tiny sizes (--quick) check the harness: their page must not replace the measured one.
    tiny = smallest < 100_000
    target = Path(tempfile.mkdtemp(prefix="bench-growth-")) / PAGE.name if tiny else PAGE
    outcome = Outcome()
    g.pace = _paced_backfill(bench, smallest)
    g.samples = _served_size_builds(bench, smallest)
    for count in sorted(g.sizes):
        run = SizeRun(count)
        g.runs.append(run)
        if count <= g.write_max:
            run.writes = _write_paths(bench, count, g.dimensions, outcome)
        run.reads = _read_paths(bench, count, g.dimensions)
        _write_page(bench, g, target)  # after every size: a long run keeps what it measured
    print("\n".join(["", "Growth table (tests/benchmarks/growth.py)", *table_lines(g)]))
    say(f"growth page written to {target}")
    return outcome


def _env(dimensions: int) -> dict[str, str]:
    return {"EMBEDDING_DIMENSIONS": str(dimensions)}


def _paced_backfill(bench: Bench, count: int) -> dict:
    """A backfill at 768 dimensions, 300 ms per request, no index: one process's rate."""
    say(f"growth: backfill_embeddings, {count:,} clips, {PACE_LATENCY_MS} ms, no index")
    clips = bench.database.prepare(count, hnsw_index=False)
    with openai_test_server(PACE_LATENCY_MS) as server:
        run = run_command(bench, server, f"growthpace{count}", clips, timeout=WRITE_TIMEOUT_S)
        env = bench.env(server, "growthpace")
    summary = run.measured.json()  # the tool's own counts of what it sent
    return {
        "rate": run.stored / run.pipeline_seconds,
        "tokens_per_clip": summary["tokens"] / summary["inputs"],
        "clips_per_request": summary["inputs"] / summary["requests"],
        "max_inputs": int(env["EMBEDDING_MAX_INPUTS_PER_REQUEST"]),
    }


def _served_size_builds(bench: Bench, count: int) -> dict:
    """HNSW build time and size over `count` x 768 vectors, as vector and as halfvec."""
    return storage_builds(
        bench,
        vectors=count,
        dimensions=DIMENSIONS,
        queries=SAMPLE_QUERIES,
        database_name=SAMPLE_DATABASE,
        label="growth",
    )


def _write_paths(bench: Bench, count: int, dimensions: int, outcome: Outcome) -> dict:
    env = _env(dimensions)
    scenario = f"growth{count}"
    with openai_test_server(0) as server:
        say(f"growth: backfill_embeddings, {count:,} clips x {dimensions}, default flags")
        clips = bench.database.prepare(count, hnsw_index=True, env=env)
        backfill = run_command(bench, server, scenario, clips, env=env, timeout=WRITE_TIMEOUT_S)
        outcome.require_complete(f"growth backfill, {count:,}", backfill.stored, clips.live)
        say(f"growth: backfill_embeddings --force, {count:,} embedded, indexed clips")
        bulk = run_command(
            bench, server, scenario, clips, "--force", env=env, timeout=WRITE_TIMEOUT_S
        )
        say(f"growth: switch_embeddings, {count:,} clips")
        model = f"{bench.marker}-{scenario}-to"
        switch = run_measured(
            manage_py("switch_embeddings", "--model", model, "--dimensions", str(dimensions)),
            env=bench.env(server, scenario) | env,
            timeout=WRITE_TIMEOUT_S,
        ).check("switch_embeddings")
    bench.forget_cache()
    switched = int(bench.database.scalar(SWITCHED, [model]) or 0)
    outcome.require_complete(f"growth switch, {count:,}", switched, clips.live)
    section = "15 growth"
    outcome.results += [
        backfill.result(section, f"backfill, default flags, {count:,} x {dimensions}"),
        bulk.result(section, f"backfill --force, {count:,} x {dimensions}"),
    ]
    return {
        "backfill": _summary(backfill) | {"peak_mib": backfill.measured.peak_rss_mib},
        "bulk": _summary(bulk),
        "switch": {"rate": switched / switch.seconds},
    }


def _summary(run: PipelineRun) -> dict:
    return {
        "rate": run.stored / run.measured.seconds,
        "pipeline_rate": run.stored / run.pipeline_seconds,
        "build_seconds": run.index_build_seconds or 0.0,
        "mode": run.measured.json()["index_mode"],
    }


def _read_paths(bench: Bench, count: int, dimensions: int) -> dict:
    say(f"growth: read paths, {count:,} demo clips x {dimensions} by COPY")
    database = BenchDatabase(bench.database.admin_url, READ_DATABASE)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
            queries = Path(tmp) / "queries.json"
            queries.write_text(json.dumps(_queries()))
            argv = ["--clips", str(count), "--queries", str(queries)]
            label = f"growthread{count}"
            return run_probe(
                bench, database, label, dimensions, "tests.benchmarks.growth_probe", argv
            )
    finally:
        database.drop()


def _queries() -> dict[str, list[str]]:
    """hybrid.py's query groups from the demo generator's own words: issue handles, games,
    title phrases, paraphrases."""
    from embeddings.demo.generator import GAMES
    from tests.benchmarks.hybrid import ISSUE_HANDLES, PARAPHRASES

    phrases = sorted(
        {value for game in GAMES for values in game.fillers.values() for value in values}
    )
    return {
        "handle": list(ISSUE_HANDLES),
        "game": [game.name for game in GAMES],
        "title": phrases[:TITLE_PHRASES],
        "paraphrase": list(PARAPHRASES.values()),
    }


def _write_page(bench: Bench, g: Growth, target: Path) -> None:
    command = "REDIS_URL=redis://127.0.0.1:6379/15 .venv/bin/python -m tests.benchmarks.run "
    command += shlex.join(sys.argv[1:])
    notes = [
        f"Vectors of {g.dimensions} dimensions in the table runs (run.py --search-dimensions);"
        f" the plan below converts to the served {g.served_dimensions}. Writes: demo clips,"
        " test server at 0 ms, clips/s of each command's wall time (start-up included); a"
        " first fill with default flags picks `rebuild` (drop the HNSW index, write, build)."
        f' Write paths stop at {g.write_max:,} clips ("not run": hours on 2 cores). Reads:'
        " p50 / p95 over cached query embeddings; recall against the same search with index"
        " scans off.",
    ]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_lines(bench.database, bench.redis_url)
    target.write_text(page(g, machine, command, date, notes))
