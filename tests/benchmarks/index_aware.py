"""Default flags on a table that has its HNSW index, as `migrate` leaves it.

At each size (`index_aware_clips`: 20,000 and 100,000): the command with default flags on the
indexed table (it picks how to write: a first fill is `rebuild`) against the same command on
the same table without the index, the rate a user would get if the index were free. Then, at
the smaller size only: writing through the index (`live`, forced by a bulk threshold no run
reaches: what every run paid before), and a rewrite of half an embedded, indexed table with
default flags (`bulk`: build rows, search served from an index throughout), against `live`.
"""

from tests.benchmarks.environment import openai_test_server
from tests.benchmarks.scenarios import Bench, Check, Outcome, Result, run_command, say

SECTION = "3 index-aware writes"
# Default flags with the index / without it, at the smaller size (the floor; it aims at
# 0.6). At the larger one the ratio is shown: the HNSW build grows faster than the writes.
TARGET = 0.3
NEVER_BULK = {"EMBEDDING_BULK_MIN_CLIPS": str(10**12)}
EDIT_HALF = "UPDATE clips SET title = title || ' (edited)' WHERE id % 2 = 0 AND NOT is_removed"


def index_aware_writes(bench: Bench) -> Outcome:
    outcome = Outcome()
    sizes = bench.sizes.index_aware_clips
    with openai_test_server(0) as server:
        for count in sizes:
            rates = {}
            for label, indexed in (("no index", False), ("default flags, HNSW index", True)):
                say(f"backfill_embeddings, {count:,} clips, {label}")
                clips = bench.database.prepare(count, hnsw_index=indexed)
                run = run_command(bench, server, f"idx{count}-{indexed}", clips)
                _require_index(bench, indexed)
                outcome.require_complete(f"{label}, {count:,}", run.stored, clips.live)
                mode = run.measured.json()["index_mode"]
                result = run.result(SECTION, f"{label}, {count:,} clips", f"index={mode}")
                outcome.results.append(result)
                rates[indexed] = result.rate
            ratio = rates[True] / rates[False]
            name = f"default flags with index / without, {count:,} clips"
            if count == sizes[0]:
                outcome.checks.append(Check(name, ratio, f">= {TARGET}", ratio >= TARGET))
            else:
                outcome.checks.append(Check(name, ratio, "info", None))
        _rewrites(bench, server, sizes[0], outcome)
    return outcome


def _rewrites(bench: Bench, server, count: int, outcome: Outcome) -> None:
    """Through the index from empty, and half an indexed table rewritten: bulk against live."""
    say(f"backfill_embeddings, {count:,} clips, through the index (live)")
    clips = bench.database.prepare(count, hnsw_index=True)
    live = run_command(bench, server, f"live{count}", clips, env=NEVER_BULK)
    outcome.require_complete("live", live.stored, clips.live)
    outcome.results.append(live.result(SECTION, f"through the index, {count:,} clips", "live"))
    rates = {}
    for label, env in (("default flags", {}), ("through the index", NEVER_BULK)):
        say(f"backfill_embeddings, half of {count:,} indexed clips edited, {label}")
        clips = bench.database.prepare(count, hnsw_index=True)
        scenario = f"half{count}-{bool(env)}"  # one model name: the edit leaves half current
        run_command(bench, server, scenario, clips)
        bench.database.execute(EDIT_HALF, "VACUUM ANALYZE clips", "CHECKPOINT")
        run = run_command(bench, server, scenario, clips, env=env)
        _require_index(bench, True)
        outcome.require_complete(f"half rewritten, {label}", run.stored, clips.live)
        summary = run.measured.json()
        result = Result(
            SECTION,
            f"half of {count:,} indexed clips edited, {label}",
            summary["processed"],
            "clips",
            run.measured.seconds,
            run.measured.peak_rss_mib,
            f"index={summary['index_mode']}",
        )
        outcome.results.append(result)
        rates[label] = result.rate
    speedup = rates["default flags"] / rates["through the index"]
    outcome.checks.append(
        Check("half rewritten: default flags / through the index", speedup, "info", None)
    )


def _require_index(bench: Bench, indexed: bool) -> None:
    if indexed and not bench.database.hnsw_index_exists():
        raise RuntimeError("the HNSW index is missing after a run with default flags")
