"""The tool in a site's own `clips` table (docs/site-database.md): what `migrate` costs the
site's writers, and what the site's table costs the backfill.

1. `migrate` takes in a site-shaped table of `site_migrate_clips` clips (1,000,000; uuid key,
   45 indexes, its triggers and HNSW index, 100,000 vectors of its own) while a site writer
   (tests/support/site_database.py's `SiteWriter`) does an INSERT and an UPDATE every 100 ms:
   the longest any of them waited (target: 2 s; each lock the tool takes waits at most 1 s)
   and the p99. A watcher samples `pg_blocking_pids` meanwhile, so a long wait comes with the
   statement it waited behind.
2. The backfill with default flags at `site_backfill_clips` (20,000) on the tool's own lean
   table and on the site-shaped table after `migrate`, same test server (0 ms): both rates
   and their ratio, of the wall time and of the wall time less the HNSW build (the same
   index over as many clips on both: what is left is the writes). To attribute the
   difference, the site-shaped table again without the site's 39 non-embedding indexes, and
   again without those and the site's own triggers (each on a fresh site database of the
   benchmark's own, dropped at the end). Runs alternate, `site_backfill_runs` of each; the
   fastest counts.
"""

import re
import threading
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tests.benchmarks.environment import LoadedClips, OpenAITestServer, openai_test_server
from tests.benchmarks.measure import Measured, manage_py, run_measured
from tests.benchmarks.scenarios import (
    Bench,
    Check,
    Outcome,
    PipelineRun,
    Result,
    _fastest,
    _requests,
    run_command,
    say,
)
from tests.support.save_stream import percentile
from tests.support.site_database import SiteDatabase, SiteWriter, site_database

SECTION = "14 site's own table"
WAIT_TARGET_S = 2.0
# The site's own vectors, as many as the build affords: building the site's HNSW index over
# 100,000 took 2-3 min of the 5-7 min a 1,000,000-clip build took on 2 cores.
SITE_VECTORS = 100_000
SITE_VECTORS_SHARE = 0.5
# Generous: `migrate` on 1,000,000 clips builds its indexes CONCURRENTLY over the whole table.
MIGRATE_TIMEOUT_S = 3600
WRITER_STATEMENTS = ("INSERT INTO clips (twitch_clip_id", "UPDATE clips SET title")
SITE_TRIGGERS = ("clips_search_vector_trigger", "update_clips_updated_at")
TOOL_INDEXES = "clip\\_embeddings\\_%"  # LIKE: what adoption names its own (adoption.py)
EMBEDDING_COLUMN = re.compile(r"\b(embedding|embedding_model|embedding_generated_at)\b")
# The site's table as `migrate` leaves it, then with less and less of the site's own on it.
AS_ADOPTED = "as adopted"
LEANER = "without its other indexes"
LEANEST = "without those and its triggers"
VARIANTS = (AS_ADOPTED, LEANER, LEANEST)


def site_table(bench: Bench) -> Outcome:
    outcome = Outcome()
    with openai_test_server(0) as server:
        _migrate_under_writes(bench, server, outcome)
        _backfill_rates(bench, server, outcome)
    return outcome


# 1. migrate under the site's writes


def _migrate_under_writes(bench: Bench, server: OpenAITestServer, outcome: Outcome) -> None:
    count = bench.sizes.site_migrate_clips
    share = min(SITE_VECTORS_SHARE, SITE_VECTORS / count)
    say(f"site database, {count:,} clips, {share:.0%} with vectors: building")
    with site_database(
        count, key="uuid", with_vectors=share, server_url=bench.database.admin_url
    ) as site:
        held = _describe_table(site)
        say(f"built in {site.build_seconds:.0f} s ({_timings(site)}); {held}")
        say(f"migrate --noinput on {count:,} clips, site writer every 100 ms")
        env = bench.env(server, "sitemigrate") | {
            "DATABASE_URL": site.url,
            "EMBEDDING_LOG_LEVEL": "INFO",  # each lock retry of the adoption is logged
        }
        watch = BlockWatch(site.url)
        writer = SiteWriter(site.url, interval=0.1, max_seconds=MIGRATE_TIMEOUT_S).start()
        watch.start()
        migrate_started = time.monotonic()
        try:
            migrate = run_measured(
                manage_py("migrate", "--noinput", "-v", "2"), env=env, timeout=MIGRATE_TIMEOUT_S
            )
        finally:
            writer.stop()
            watch.stop()
        migrate.check("migrate (site table)")
        _require_valid_indexes(site)
    waits = writer.waits
    worst = max(writer.statements, key=lambda statement: statement.seconds)
    p99 = percentile(waits, 0.99)
    retries = migrate.stderr.count("clips is busy")
    blocked = watch.summary()
    say(
        f"migrate {migrate.seconds:.1f} s; {len(waits)} site writes, longest {worst.seconds:.3f}"
        f" s ({worst.kind}, at +{worst.started - migrate_started:.1f} s), p99 {p99:.3f} s;"
        f" {retries} lock retries; blocked behind: {blocked or 'nothing seen'}"
    )
    outcome.results += [
        Result(
            SECTION,
            f"migrate on the site's table, {count:,} clips",
            count,
            "clips",
            migrate.seconds,
            migrate.peak_rss_mib,
            f"table held {held}; {_slowest_migrations(migrate)}; {retries} lock retries",
        ),
        Result(
            SECTION,
            f"site writes during that migrate, {count:,} clips",
            len(waits),
            "writes",
            writer.statements[-1].started + waits[-1] - writer.statements[0].started,
            note=f"longest wait {worst.seconds:.3f} s ({worst.kind}, at"
            f" +{worst.started - migrate_started:.1f} s), p99 {p99:.3f} s,"
            f" {len(writer.errors)} errors; blocked behind: {blocked or 'nothing seen'}",
        ),
    ]
    outcome.checks += [
        Check(
            f"longest site write wait during migrate, {count:,} clips",
            worst.seconds,
            f"<= {WAIT_TARGET_S} s",
            worst.seconds <= WAIT_TARGET_S,
        ),
        Check(
            f"site write errors during migrate, {count:,} clips",
            len(writer.errors),
            "= 0",
            not writer.errors,
        ),
    ]
    for error in writer.errors[:3]:
        say(f"site writer error: {error.kind}: {error.error}")


def _describe_table(site: SiteDatabase) -> str:
    with site.connect(autocommit=True) as conn:
        clips, vectors = conn.execute("SELECT count(*), count(embedding) FROM clips").fetchone()
        indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'clips'::regclass"
        ).fetchone()[0]
    return f"{clips:,} clips, {vectors:,} with vectors, {indexes} indexes (its HNSW one included)"


def _timings(site: SiteDatabase) -> str:
    return ", ".join(f"{step} {seconds:.0f}s" for step, seconds in site.timings.items())


def _require_valid_indexes(site: SiteDatabase) -> None:
    with site.connect(autocommit=True) as conn:
        invalid = conn.execute(
            "SELECT string_agg(indexrelid::regclass::text, ', ') FROM pg_index"
            " WHERE indrelid = 'clips'::regclass AND NOT indisvalid"
        ).fetchone()[0]
    if invalid:
        raise RuntimeError(f"migrate left invalid indexes on the site's clips: {invalid}")


APPLIED = re.compile(r"Applying (\S+)\.\.\. OK \(([\d.]+)s\)")


def _slowest_migrations(migrate: Measured, shown: int = 2) -> str:
    """The migrations that took longest (`migrate -v 2` prints each one's time)."""
    applied = [(float(seconds), name) for name, seconds in APPLIED.findall(migrate.stdout)]
    slowest = sorted(applied, reverse=True)[:shown]
    return ", ".join(f"{name.split('.')[-1]} {seconds:.1f}s" for seconds, name in slowest)


@dataclass
class BlockWatch:
    """Samples, every 50 ms, which statements the site writer's INSERTs and UPDATEs wait
    behind (`pg_blocking_pids`), and the longest each blocker held one."""

    url: str
    interval: float = 0.05
    longest: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    QUERY = """
        SELECT extract(epoch FROM clock_timestamp() - w.query_start)::float8,
            left(regexp_replace(b.query, '\\s+', ' ', 'g'), 100),
            coalesce(b.wait_event_type || ':' || b.wait_event, b.state)
        FROM pg_stat_activity w
        CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
        JOIN pg_stat_activity b ON b.pid = blocker.pid
        WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
            AND (w.query LIKE %s OR w.query LIKE %s)
    """

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="block-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        patterns = [f"{prefix}%" for prefix in WRITER_STATEMENTS]
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                for seconds, blocker, state in conn.execute(self.QUERY, patterns):
                    key = f"{blocker!r} ({state})"
                    self.longest[key] = max(seconds, self.longest.get(key, 0.0))
                self._stop.wait(self.interval)

    def summary(self, shown: int = 2) -> str:
        ranked = sorted(self.longest.items(), key=lambda item: -item[1])[:shown]
        return "; ".join(f"{blocker} up to {seconds:.2f} s" for blocker, seconds in ranked)


# 2. the backfill on the site's table against the tool's own


def _backfill_rates(bench: Bench, server: OpenAITestServer, outcome: Outcome) -> None:
    """Runs of each table alternate, so a busy spell hits all of them; the fastest counts."""
    count, repeats = bench.sizes.site_backfill_clips, bench.sizes.site_backfill_runs
    owns: list[PipelineRun] = []
    sites: dict[str, list[tuple[PipelineRun, str]]] = {variant: [] for variant in VARIANTS}
    for attempt in range(repeats):
        say(f"backfill_embeddings, {count:,} clips, the tool's own table (HNSW index), #{attempt}")
        clips = bench.database.prepare(count, hnsw_index=True)
        own = run_command(bench, server, f"siteown{count}-{attempt}", clips)
        outcome.require_complete(f"own table, {count:,}", own.stored, clips.live)
        owns.append(own)
        for variant in VARIANTS:
            say(f"backfill_embeddings, {count:,} clips, the site's table {variant}, #{attempt}")
            run, note = _site_backfill(bench, server, count, variant, attempt)
            outcome.require_complete(f"site {variant}, {count:,}", run.stored, run.clips.live)
            sites[variant].append((run, note))
    own, spread = _fastest(owns)
    outcome.results.append(
        own.result(
            SECTION,
            f"backfill, the tool's own table, {count:,} clips",
            ", ".join(filter(None, [_mode(own), spread])),
        )
    )
    own_rate, own_pipeline = _rate(own), _pipeline_rate(own)
    ratios = {}
    for variant, runs in sites.items():
        run, spread = _fastest([run for run, _ in runs])
        note = next(note for candidate, note in runs if candidate is run)
        ratios[variant] = (_rate(run) / own_rate, _pipeline_rate(run) / own_pipeline)
        compared = (
            f"{ratios[variant][0]:.2f}x own table's clips/s,"
            f" {ratios[variant][1]:.2f}x without the HNSW builds"
        )
        outcome.results.append(
            run.result(
                SECTION,
                f"backfill, the site's table {variant}, {count:,} clips",
                "; ".join(filter(None, [note, spread, compared])),
            )
        )
    adopted, writes = ratios[AS_ADOPTED]
    outcome.checks += [
        Check(f"backfill clips/s, site's table / own, {count:,}", adopted, "info", None),
        Check(f"the same, HNSW builds aside, {count:,}", writes, "info", None),
    ]
    say(
        "clips/s against the own table's (HNSW builds aside): "
        + ", ".join(f"{v} {r:.2f} ({p:.2f})" for v, (r, p) in ratios.items())
    )


def _rate(run: PipelineRun) -> float:
    return run.stored / run.measured.seconds


def _pipeline_rate(run: PipelineRun) -> float:
    """Clips/s of the run's wall time less its HNSW build: the writes, where the site's other
    indexes and triggers cost (both tables build the same index over the same number)."""
    return run.stored / (run.measured.seconds - (run.index_build_seconds or 0.0))


def _mode(run: PipelineRun) -> str:
    return f"index={run.measured.json()['index_mode']}"


def _site_backfill(
    bench: Bench, server: OpenAITestServer, count: int, variant: str, attempt: int
) -> tuple[PipelineRun, str]:
    """A fresh site database (no vectors: every live clip to embed), `migrate`, then the
    variant's indexes and triggers taken away, then the backfill with default flags."""
    with site_database(count, key="uuid", server_url=bench.database.admin_url) as site:
        scenario = f"site{count}-{VARIANTS.index(variant)}-{attempt}"
        env = bench.env(server, scenario) | {"DATABASE_URL": site.url}
        run_measured(manage_py("migrate", "--noinput", "-v", "0"), env=env).check("migrate")
        dropped = _drop_site_indexes(site) if variant != AS_ADOPTED else []
        if variant == LEANEST:
            _disable_site_triggers(site)
        with site.connect(autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE clips")
            conn.execute("CHECKPOINT")
            live = conn.execute("SELECT count(*) FROM clips WHERE is_removed = false").fetchone()[0]
            indexes = conn.execute(
                "SELECT count(*) FROM pg_index WHERE indrelid = 'clips'::regclass"
            ).fetchone()[0]
        measured = run_measured(manage_py("backfill_embeddings", "--json"), env=env).check(
            "backfill_embeddings (site table)"
        )
        bench.forget_cache()
        with site.connect(autocommit=True) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM clips WHERE is_removed = false AND embedding IS NOT NULL"
            ).fetchone()[0]
    summary = measured.json()
    build = summary["index_build_seconds"]
    run = PipelineRun(
        measured,
        LoadedClips(loaded=count, live=live, loader_seconds=site.build_seconds),
        stored=stored,
        pipeline_seconds=summary["duration_seconds"] - (build or 0.0),
        requests=_requests(server),
        index_build_seconds=build,
    )
    note = f"{_mode(run)}, {indexes} indexes on clips"
    if dropped:
        note += f" ({len(dropped)} of the site's dropped)"
    if variant == LEANEST:
        note += f", the site's triggers off ({', '.join(SITE_TRIGGERS)})"
    return run, note


def _drop_site_indexes(site: SiteDatabase) -> list[str]:
    """The site's indexes that neither keep a constraint nor cover an embedding column (its
    HNSW index, `idx_clips_needs_embedding` and friends stay), and none of the tool's."""
    with site.connect(autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'clips'::regclass"
            " AND NOT i.indisunique AND NOT i.indisprimary AND c.relname NOT LIKE %s",
            [TOOL_INDEXES],
        ).fetchall()
        # What an index covers: its columns, expressions and predicate, after its name.
        names = [
            name
            for name, definition in indexes
            if not EMBEDDING_COLUMN.search(definition.split(" USING ", 1)[1])
        ]
        for name in names:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return names


def _disable_site_triggers(site: SiteDatabase) -> None:
    with site.connect(autocommit=True) as conn:
        for trigger in SITE_TRIGGERS:
            conn.execute(
                sql.SQL("ALTER TABLE clips DISABLE TRIGGER {}").format(sql.Identifier(trigger))
            )
