"""The measured scenarios; each returns its results and target checks.

Every backfill starts from a freshly created and migrated database holding demo clips without
vectors, and from a cold embedding cache (a model name no earlier run used: the cache key
includes the model, and the test server accepts any name). Rates are clips actually stored
per second of the subprocess's wall time (start-up included, as a user sees it).
"""

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.benchmarks.environment import (
    BenchDatabase,
    LoadedClips,
    OpenAITestServer,
    delete_redis_keys,
    openai_test_server,
)
from tests.benchmarks.measure import Measured, manage_py, run_measured

DIMENSIONS = 768
CONCURRENCY = 4  # the project's default EMBEDDING_CONCURRENCY; the reference gets the same
LATENCIES_MS = (0, 300)
# The command (default flags: cache, claims) against the ideal plain script
# (reference_pipeline.py), wall time; from E2E_TARGET_CLIPS clips up, a miss fails. Below it
# the ratio is shown: start-up (Django, the run's checks) weighs most there.
E2E_TARGET = 0.85
E2E_TARGET_CLIPS = 50_000


@dataclass(frozen=True)
class Sizes:
    service_texts: int = 20_000
    # (clips, runs of each side, the fastest counts): start-up weighs most at the small size
    end_to_end: tuple[tuple[int, int], ...] = ((20_000, 3), (50_000, 2))
    index_aware_clips: tuple[int, int] = (20_000, 100_000)
    memory_clips: tuple[int, int] = (10_000, 100_000)
    search_vectors: int = 20_000  # recall@10, at 768 dimensions
    search_clips: int = 1_000_000  # latency
    search_clips_dimensions: int = 64  # see tests/benchmarks/search.py for why not 768
    search_queries: int = 100
    local_texts: int = 2_000
    live_sync_seconds: int = 60
    switch_clips: int = 20_000
    switch_idle_seconds: int = 5  # searched before the switch starts
    storage_vectors: int = 20_000  # vector against halfvec, at 1536 dimensions
    site_migrate_clips: int = 1_000_000  # migrate on a site's table, under its writes
    site_backfill_clips: int = 20_000  # the backfill on a site's table against the tool's own
    site_backfill_runs: int = 2  # of each table, alternating; the fastest counts
    growth_sizes: tuple[int, ...] = (100_000, 1_000_000, 3_000_000)  # run.py --growth-sizes
    growth_write_max: int = 100_000  # write paths stop here (growth.py); 1M takes ~1.5 h here


FULL = Sizes()
# `--quick`: a smoke run of the harness
QUICK = Sizes(
    2_000,
    ((2_000, 1),),
    (2_000, 6_000),
    (1_000, 10_000),
    2_000,
    20_000,
    64,
    20,
    200,
    5,
    2_000,
    2,
    2_000,
    site_migrate_clips=2_000,
    site_backfill_clips=1_000,
    site_backfill_runs=1,
    growth_sizes=(2_000, 6_000),
    growth_write_max=2_000,
)


@dataclass(frozen=True)
class Result:
    """One measured run: `items` texts or clips in `seconds` of wall time."""

    section: str
    name: str
    items: int
    unit: str
    seconds: float
    peak_rss_mib: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    target: str
    met: bool | None  # None: a number shown for information, with no target to meet


@dataclass
class Outcome:
    results: list[Result] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def require_complete(self, run: str, stored: int, expected: int) -> None:
        """A run that left live clips without a vector is a failure, whatever it reported."""
        if stored != expected:
            self.checks.append(
                Check(f"{run}: clips stored / live", stored / expected, "= 1.00", False)
            )


@dataclass(frozen=True)
class Bench:
    """What every scenario needs: the database, Redis, this run's unique marker, the sizes."""

    database: BenchDatabase
    redis_url: str
    marker: str
    sizes: Sizes = FULL

    def env(self, server: OpenAITestServer, scenario: str) -> dict[str, str]:
        """Settings for a subprocess: the bench database, a cold cache, limits that never bind."""
        return {
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis_url,
            "OPENAI_API_KEY": "bench-not-a-real-key",
            "OPENAI_BASE_URL": server.base_url,
            "EMBEDDING_ENABLED": "true",
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": f"{self.marker}-{scenario}",
            "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
            "EMBEDDING_SEND_DIMENSIONS": "true",
            "EMBEDDING_REQUESTS_PER_MINUTE": "10000000",
            "EMBEDDING_TOKENS_PER_MINUTE": "10000000000",
            "EMBEDDING_MAX_INPUTS_PER_REQUEST": "2048",
            "EMBEDDING_MAX_TOKENS_PER_REQUEST": "300000",
            "EMBEDDING_CONCURRENCY": str(CONCURRENCY),
        }

    def forget_cache(self) -> None:
        delete_redis_keys(self.redis_url, self.marker)


@dataclass(frozen=True)
class PipelineRun:
    """One backfill (the command or the reference) and what it left in the database."""

    measured: Measured
    clips: LoadedClips
    stored: int
    pipeline_seconds: float
    requests: int
    index_build_seconds: float | None = None  # the rebuild mode's, after the pipeline

    def result(self, section: str, name: str, note: str = "") -> Result:
        detail = f"pipeline {self.pipeline_seconds:.1f}s, {self.requests} requests"
        if self.index_build_seconds is not None:
            detail += f", index build {self.index_build_seconds:.1f}s"
        return Result(
            section,
            name,
            self.stored,
            "clips",
            self.measured.seconds,
            self.measured.peak_rss_mib,
            f"{detail}{', ' + note if note else ''}",
        )


def say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _requests(server: OpenAITestServer) -> int:
    count = server.stats()["requests"]
    server.reset()
    return count


def run_command(
    bench: Bench,
    server: OpenAITestServer,
    scenario: str,
    clips: LoadedClips,
    *flags: str,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> PipelineRun:
    """`manage.py backfill_embeddings --json [flags]` as a subprocess, with default settings
    (and `env`'s)."""
    measured = run_measured(
        manage_py("backfill_embeddings", "--json", *flags),
        env=bench.env(server, scenario) | (env or {}),
        timeout=timeout,
    ).check("backfill_embeddings")
    bench.forget_cache()
    summary = measured.json()
    build = summary["index_build_seconds"]
    return PipelineRun(
        measured,
        clips,
        stored=bench.database.embedded_live_clips(),
        pipeline_seconds=summary["duration_seconds"] - (build or 0.0),
        requests=_requests(server),
        index_build_seconds=build,
    )


def run_reference(
    bench: Bench, server: OpenAITestServer, scenario: str, clips: LoadedClips
) -> PipelineRun:
    argv = [sys.executable, "-m", "tests.benchmarks.reference_pipeline"]
    argv += ["--database-url", bench.database.url, "--base-url", server.base_url]
    argv += ["--model", f"{bench.marker}-{scenario}", "--dimensions", str(DIMENSIONS)]
    argv += ["--concurrency", str(CONCURRENCY)]
    measured = run_measured(argv, env={}).check("reference_pipeline")
    return PipelineRun(
        measured,
        clips,
        stored=bench.database.embedded_live_clips(),
        pipeline_seconds=measured.json()["seconds"],
        requests=_requests(server),
    )


def _fastest(runs: Sequence[PipelineRun]) -> tuple[PipelineRun, str]:
    """The fastest of repeated runs, and the spread of wall times to show next to it."""
    best = min(runs, key=lambda run: run.measured.seconds)
    if len(runs) == 1:
        return best, ""
    times = sorted(run.measured.seconds for run in runs)
    return best, f"best of {len(runs)} ({times[0]:.1f}-{times[-1]:.1f}s)"


def service_alone(bench: Bench) -> Outcome:
    """Texts/s of EmbeddingService, cold cache, at each server latency."""
    outcome = Outcome()
    texts = bench.sizes.service_texts
    for latency in LATENCIES_MS:
        say(f"service alone, {texts:,} texts, {latency} ms")
        with openai_test_server(latency) as server:
            argv = [sys.executable, "-m", "tests.benchmarks.service_throughput"]
            run = run_measured(
                [*argv, "--texts", str(texts)], env=bench.env(server, f"svc{latency}")
            ).check("service_throughput")
            summary = run.json()
            requests = _requests(server)
        bench.forget_cache()
        outcome.require_complete(f"service, {latency} ms", summary["embedded"], texts)
        outcome.results.append(
            Result(
                "1 service",
                f"EmbeddingService.embed, {latency} ms",
                summary["embedded"],
                "texts",
                summary["seconds"],
                run.peak_rss_mib,
                f"{requests} requests, one embed() call (process wall {run.seconds:.1f}s)",
            )
        )
    return outcome


def end_to_end(bench: Bench) -> Outcome:
    """The command against the minimal reference pipeline, no HNSW index,
    process wall time (start-up included), at each size and latency."""
    outcome = Outcome()
    for count, repeats in bench.sizes.end_to_end:
        for latency in LATENCIES_MS:
            _command_against_reference(bench, outcome, count, repeats, latency)
    return outcome


def _command_against_reference(
    bench: Bench, outcome: Outcome, count: int, repeats: int, latency: int
) -> None:
    """Runs of the two alternate on the same server, so a busy spell hits both."""
    commands: list[PipelineRun] = []
    references: list[PipelineRun] = []
    with openai_test_server(latency) as server:
        for attempt in range(repeats):
            say(f"backfill_embeddings vs reference, {count:,} clips, {latency} ms, #{attempt}")
            scenario = f"{count}-{latency}-{attempt}"
            clips = bench.database.prepare(count, hnsw_index=False)
            commands.append(run_command(bench, server, f"e2e{scenario}", clips))
            clips = bench.database.prepare(count, hnsw_index=False)
            references.append(run_reference(bench, server, f"ref{scenario}", clips))
    for run in commands + references:
        name = "command" if run in commands else "reference"
        outcome.require_complete(f"{name}, {count:,}, {latency} ms", run.stored, run.clips.live)
    command, command_spread = _fastest(commands)
    reference, reference_spread = _fastest(references)
    where = f"{count:,} clips, {latency} ms"
    outcome.results += [
        command.result("2 end to end", f"backfill_embeddings, {where}", command_spread),
        reference.result("2 end to end", f"reference pipeline, {where}", reference_spread),
    ]
    ratio = (command.stored / command.measured.seconds) / (
        reference.stored / reference.measured.seconds
    )
    name = f"command / ideal clips/s, {where}"
    met = ratio >= E2E_TARGET if count >= E2E_TARGET_CLIPS else None
    outcome.checks.append(Check(name, ratio, f">= {E2E_TARGET}", met))


def index_aware_writes(bench: Bench) -> Outcome:
    """Default flags on an indexed table, against none; bulk against live
    (tests/benchmarks/index_aware.py)."""
    from tests.benchmarks.index_aware import index_aware_writes as measure

    return measure(bench)


def peak_memory(bench: Bench) -> Outcome:
    """Peak RSS of the command at a small and a large table; the loader's time."""
    outcome = Outcome()
    small, large = bench.sizes.memory_clips
    peaks: list[float] = []
    with openai_test_server(0) as server:
        for count in (small, large):
            say(f"backfill_embeddings, {count:,} clips, peak memory")
            clips = bench.database.prepare(count, hnsw_index=False)
            run = run_command(bench, server, f"memory{count}", clips)
            outcome.require_complete(f"{count:,} clips", run.stored, clips.live)
            outcome.results.append(
                run.result("4 peak memory", f"backfill_embeddings, {count:,} clips")
            )
            peaks.append(run.measured.peak_rss_mib)
    outcome.results.append(
        Result(
            "5 demo loader",
            "load_demo_clips (COPY)",
            clips.loaded,
            "clips",
            clips.loader_seconds,
            note="time the command reports",
        )
    )
    ratio = peaks[1] / peaks[0]
    outcome.checks.append(
        Check(f"peak RSS {large:,} / {small:,} clips", ratio, "<= 1.20", ratio <= 1.20)
    )
    return outcome


def admin_coverage_page(bench: Bench) -> Outcome:
    """The coverage page on 1,000,000 clips (tests/benchmarks/search.py)."""
    from tests.benchmarks.search import admin_coverage_page as measure

    return measure(bench)


def local_provider(bench: Bench) -> Outcome:
    """Clips/s of the local all-MiniLM-L6-v2 model on this machine's CPU."""
    outcome = Outcome()
    texts = bench.sizes.local_texts
    say(f"local provider, {texts:,} texts")
    with openai_test_server(0) as server:  # unused by the local provider; env() wants one
        env = bench.env(server, "local") | {
            "EMBEDDING_PROVIDER": "local",
            "EMBEDDING_MODEL": "all-MiniLM-L6-v2",
            "EMBEDDING_DIMENSIONS": "384",
        }
        argv = [sys.executable, "-m", "tests.benchmarks.service_throughput"]
        run = run_measured([*argv, "--texts", str(texts), "--no-cache"], env=env).check(
            "service_throughput (local)"
        )
    summary = run.json()
    outcome.require_complete("local provider", summary["embedded"], texts)
    outcome.results.append(
        Result(
            "8 local",
            "all-MiniLM-L6-v2 on the CPU, cache off",
            summary["embedded"],
            "texts",
            summary["seconds"],
            run.peak_rss_mib,
            f"384 dimensions, torch CPU (process wall {run.seconds:.1f}s, model load included)",
        )
    )
    return outcome


def live_sync(bench: Bench) -> Outcome:
    """Lag and clips per request of live sync under a stream of saves."""
    from tests.benchmarks.live_sync import live_sync as measure

    return measure(bench)


def semantic_search(bench: Bench) -> Outcome:
    """Recall@10 of the HNSW path and search latency (tests/benchmarks/search.py)."""
    from tests.benchmarks.search import semantic_search as measure

    return measure(bench)


def hybrid_search(bench: Bench) -> Outcome:
    """Recall@10 and nDCG@10 of vector, text and hybrid search on labelled queries,
    and hybrid latency at 1,000,000 clips (tests/benchmarks/hybrid.py)."""
    from tests.benchmarks.hybrid import hybrid_search as measure

    return measure(bench)


def shared_budget(bench: Bench) -> Outcome:
    """1, 4 and 8 processes on one Redis hold the TPM pace, with few 429s and no
    text sent twice (tests/benchmarks/budget.py)."""
    from tests.benchmarks.budget import shared_budget as measure

    return measure(bench)


def switch_embeddings(bench: Bench) -> Outcome:
    """`switch_embeddings` to another model, with search timed and checked all
    along (tests/benchmarks/switching.py)."""
    from tests.benchmarks.switching import switch_embeddings as measure

    return measure(bench)


def halfvec_vs_vector(bench: Bench) -> Outcome:
    """The HNSW index over halfvec(1536) against vector(1536): size, build time,
    recall@10 (tests/benchmarks/switching.py)."""
    from tests.benchmarks.switching import halfvec_vs_vector as measure

    return measure(bench)


def in_flight_sharing(bench: Bench) -> Outcome:
    """One request per text between calls in flight, against every call sending
    its own (tests/benchmarks/sharing.py)."""
    from tests.benchmarks.sharing import in_flight_sharing as measure

    return measure(bench)


def site_table(bench: Bench) -> Outcome:
    """The tool in a site's own table: the longest site write wait during `migrate` on
    1,000,000 clips, and the backfill's rate there against the tool's own table
    (tests/benchmarks/site_table.py)."""
    from tests.benchmarks.site_table import site_table as measure

    return measure(bench)


def growth(bench: Bench) -> Outcome:
    """The growth table and the 10,000,000-clip plan, written to
    docs/performance-growth.md (tests/benchmarks/growth.py)."""
    from tests.benchmarks.growth import growth as measure

    return measure(bench)


def coverage_counts(bench: Bench) -> Outcome:
    """The coverage counts' cost to the site's writes, and the page and /metrics at
    1,000,000 and 2,000,000 clips (tests/benchmarks/coverage_counts.py)."""
    from tests.benchmarks.coverage_counts import coverage_counts as measure

    return measure(bench)


SCENARIOS: tuple[Callable[[Bench], Outcome], ...] = (
    service_alone,
    in_flight_sharing,
    end_to_end,
    index_aware_writes,
    peak_memory,
    semantic_search,
    admin_coverage_page,
    local_provider,
    live_sync,
    hybrid_search,
    shared_budget,
    switch_embeddings,
    halfvec_vs_vector,
    site_table,
    growth,
    coverage_counts,
)
