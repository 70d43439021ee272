"""Sharing one request per text between calls in flight, measured both ways.

`EmbeddingService` calls of 2,048 texts from 4 threads at once (a backfill's shape), at 300 ms
latency so that calls overlap, cold cache. Distinct texts: what sharing costs when nothing is
shared (the throughput of both must be the same). Twins (each text in two consecutive calls):
what it saves, counted at the server as texts answered more than once.
"""

import sys

from tests.benchmarks.environment import openai_test_server
from tests.benchmarks.measure import run_measured
from tests.benchmarks.scenarios import Bench, Check, Outcome, Result, say

SECTION = "1 in-flight sharing"
LATENCY_MS = 300
CALL_SIZE = 2048
REPEATS = 3
COST_TARGET = 0.95  # sharing / not sharing, texts/s, distinct texts (within the noise here)


def in_flight_sharing(bench: Bench) -> Outcome:
    outcome = Outcome()
    texts = bench.sizes.service_texts
    with openai_test_server(LATENCY_MS) as server:
        for layout in ("distinct", "twins"):
            best: dict[bool, Result] = {}
            twice: dict[bool, int] = {}
            for attempt in range(REPEATS):
                for sharing in (True, False):
                    result, duplicates = _run(bench, server, texts, layout, sharing, attempt)
                    if sharing not in best or result.rate > best[sharing].rate:
                        best[sharing] = result
                    twice[sharing] = max(twice.get(sharing, 0), duplicates)
            outcome.results += [best[True], best[False]]
            ratio = best[True].rate / best[False].rate
            name = f"texts/s sharing / not sharing, {layout} texts"
            if layout == "distinct":
                outcome.checks.append(Check(name, ratio, f">= {COST_TARGET}", ratio >= COST_TARGET))
            else:
                outcome.checks += [
                    Check(name, ratio, "info", None),
                    Check(
                        "texts answered twice, twins, sharing", twice[True], "= 0", not twice[True]
                    ),
                    Check("texts answered twice, twins, not sharing", twice[False], "info", None),
                ]
    return outcome


def _run(
    bench: Bench, server, texts: int, layout: str, sharing: bool, attempt: int
) -> tuple[Result, int]:
    how = "sharing" if sharing else "not sharing"
    say(f"service, calls of {CALL_SIZE:,}, {layout} texts, {how}, #{attempt}")
    argv = [sys.executable, "-m", "tests.benchmarks.service_throughput", "--texts", str(texts)]
    argv += ["--calls-of", str(CALL_SIZE)]
    argv += ["--twins"] * (layout == "twins") + ["--no-sharing"] * (not sharing)
    scenario = f"share-{layout}-{sharing}-{attempt}"
    run = run_measured(argv, env=bench.env(server, scenario)).check("service_throughput")
    summary = run.json()
    stats = server.stats()
    server.reset()
    bench.forget_cache()
    if summary["embedded"] != summary["texts"]:
        raise RuntimeError(f"{scenario}: {summary['embedded']} of {summary['texts']} answered")
    note = (
        f"{stats['texts']['total']:,} texts sent, {stats['texts']['duplicates']:,} twice,"
        f" {summary['shared']:,} shared, {summary['cache_hits']:,} cached"
    )
    result = Result(
        SECTION,
        f"calls of {CALL_SIZE:,}, {layout} texts, {how}",
        summary["texts"],
        "texts",
        summary["seconds"],
        run.peak_rss_mib,
        note,
    )
    return result, stats["texts"]["duplicates"]
