"""Live sync under a steady stream of saves: the lag from commit to stored vector, and how many
clips each API request carried.

A saver process creates clips one by one through the ORM (as a site's web processes would),
a real `qcluster` embeds them, the test server answers in 300 ms. Target: p95
under 5 s at 20 saves a second, at most one request per 4 clips.
"""

import os
import subprocess

import psycopg

from tests.benchmarks.environment import BenchDatabase, openai_test_server
from tests.benchmarks.measure import manage_py, run_measured
from tests.benchmarks.scenarios import Bench, Check, Outcome, Result, say
from tests.support.cluster import stop_cluster
from tests.support.save_stream import percentile, run_saver
from tests.support.waiting import wait_for

RATE = 20  # saves per second
LATENCY_MS = 300
LAG_P95_TARGET_S = 5.0
CLIPS_PER_REQUEST_TARGET = 4.0


def live_sync(bench: Bench) -> Outcome:
    outcome = Outcome()
    seconds = bench.sizes.live_sync_seconds
    say(f"live sync, {RATE} saves/s for {seconds} s, {LATENCY_MS} ms API latency")
    database = bench.database
    database.recreate()
    with openai_test_server(LATENCY_MS) as server:
        env = {
            **os.environ,
            **bench.env(server, "livesync"),
            "Q_CLUSTER_NAME": f"{bench.marker}-live",
            "EMBEDDING_LIVE_SYNC": "true",
        }
        run_measured(manage_py("migrate", "--noinput", "-v", "0"), env=env).check("migrate")
        cluster = subprocess.Popen(
            manage_py("qcluster"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            committed = run_saver(
                env, "stream", "--prefix", "live", "--rate", str(RATE), "--seconds", str(seconds)
            )
            count = (
                "SELECT count(*) FROM clips "
                "WHERE embedding IS NOT NULL AND twitch_clip_id LIKE 'live-%'"
            )
            wait_for(lambda: database.scalar(count) == len(committed), 120)
        finally:
            stop_cluster(cluster)
        requests = server.stats()["requests"]
    made = _made_at(database)
    waited = sorted(made[clip] - at for clip, at in committed.items())
    p50, p95 = percentile(waited, 0.5), percentile(waited, 0.95)
    per_request = len(committed) / requests
    bench.forget_cache()
    outcome.results.append(
        Result(
            "9 live sync",
            f"{RATE} saves/s for {seconds} s, {LATENCY_MS} ms latency, qcluster",
            len(committed),
            "clips",
            float(seconds),
            note=f"lag p50 {p50:.2f} s, p95 {p95:.2f} s, max {waited[-1]:.2f} s; "
            f"{requests} requests, {per_request:.1f} clips/request",
        )
    )
    outcome.checks += [
        Check("live sync lag p95 (s)", p95, f"< {LAG_P95_TARGET_S}", p95 < LAG_P95_TARGET_S),
        Check(
            "live sync clips per request",
            per_request,
            f">= {CLIPS_PER_REQUEST_TARGET}",
            per_request >= CLIPS_PER_REQUEST_TARGET,
        ),
    ]
    return outcome


def _made_at(database: BenchDatabase) -> dict[str, float]:
    with psycopg.connect(database.url) as conn:
        rows = conn.execute(
            "SELECT twitch_clip_id, extract(epoch FROM embedding_generated_at)::float8 "
            "FROM clips WHERE twitch_clip_id LIKE 'live-%'"
        ).fetchall()
    return dict(rows)
