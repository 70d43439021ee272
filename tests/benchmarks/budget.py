"""One budget for many machines. N `backfill_embeddings` processes at once on one
table and one Redis, as N machines would run them, against a test server that enforces the
account's TPM like the API (429 with Retry-After past it).

Measured on the server's clock: the token pace after the initial burst (both the server's and
the shared limiter's buckets start full, so the first TPM tokens go at once; pacing counts
from the first request that had to wait for refill), the share of requests refused with 429,
and texts answered twice. The clips' titles are made unique first, so a text sent twice is
work paid twice, not two clips that happen to read alike. Requests carry at most
MAX_INPUTS clips (about 1.8 s of the pace each), so the pace is measured over many requests.
"""

import os
import subprocess
import time

from tests.benchmarks.environment import openai_test_server
from tests.benchmarks.measure import manage_py
from tests.benchmarks.scenarios import Bench, Check, Outcome, Result, say
from tests.support.openai_server import paced_tokens_per_second

TPM = 240_000  # 4,000 tokens/s: about 140 demo clips/s
RPM = 100_000  # not the binding limit
MAX_INPUTS = 256
CLIPS = 15_000  # the burst (TPM tokens, ~8,000 clips), then ~50 s of pace
PROCESSES = (1, 4, 8)
PACE_TARGET = 0.90
RATE_LIMITED_TARGET = 0.02


def shared_budget(bench: Bench) -> Outcome:
    outcome = Outcome()
    for processes in PROCESSES:
        say(f"{processes} backfill_embeddings processes, one Redis, {TPM:,} TPM")
        clips = bench.database.prepare(CLIPS, hnsw_index=False)
        bench.database.execute("UPDATE clips SET title = title || ' #' || id", "VACUUM clips")
        limits = ("--tokens-per-minute", str(TPM), "--requests-per-minute", str(RPM))
        with openai_test_server(0, *limits) as server:
            env = bench.env(server, f"budget{processes}") | {
                "EMBEDDING_TOKENS_PER_MINUTE": str(TPM),
                "EMBEDDING_REQUESTS_PER_MINUTE": str(RPM),
                "EMBEDDING_MAX_INPUTS_PER_REQUEST": str(MAX_INPUTS),
            }
            seconds = _run_together(processes, env)
            stats = server.stats()
        bench.forget_cache()
        stored = bench.database.embedded_live_clips()
        outcome.require_complete(f"{processes} processes", stored, clips.live)
        pace = paced_tokens_per_second(stats["request_log"], TPM) / (TPM / 60)
        limited = stats["rate_limited"] / stats["requests"]
        twice = stats["texts"]["duplicates"]
        outcome.results.append(
            Result(
                "10 shared budget",
                f"{processes} processes at {TPM:,} TPM",
                stored,
                "clips",
                seconds,
                note=f"pace {pace:.0%} of TPM, {stats['rate_limited']} of {stats['requests']} "
                f"requests 429, {twice} texts sent twice",
            )
        )
        outcome.checks += [
            Check(f"{processes} processes: pace / TPM", pace, ">= 0.90", pace >= PACE_TARGET),
            Check(
                f"{processes} processes: 429 share",
                limited,
                "<= 0.02",
                limited <= RATE_LIMITED_TARGET,
            ),
            Check(f"{processes} processes: texts sent twice", twice, "= 0", twice == 0),
        ]
    return outcome


def _run_together(processes: int, env: dict[str, str]) -> float:
    """Start the commands at once and wait for all; every one must succeed."""
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            manage_py("backfill_embeddings"),
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    failures = []
    for process in running:
        _, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            failures.append(f"exit {process.returncode}: {stderr[-1000:]}")
    if failures:
        raise RuntimeError("; ".join(failures))
    return time.perf_counter() - started
