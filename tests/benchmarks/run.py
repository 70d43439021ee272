"""`make bench`: the embedding pipeline's numbers, printed as a table.

Runs every scenario of `scenarios.py` against a dedicated database (`bench_clips`, dropped at
the end) on the embedded PostgreSQL (or DATABASE_URL's server) and the test OpenAI server in a
subprocess; Redis keys it creates are deleted by this run's marker. Progress goes to stderr.
"""

import argparse
import dataclasses
import os
import sys
import time
import traceback
import uuid

from tests.benchmarks.environment import BenchDatabase, machine_lines, server_url
from tests.benchmarks.report import check_lines, result_table
from tests.benchmarks.scenarios import FULL, QUICK, SCENARIOS, Bench, Check, Outcome

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the harness")
    parser.add_argument(
        "--only", nargs="+", choices=[s.__name__ for s in SCENARIOS], help="run just these"
    )
    parser.add_argument(
        "--search-dimensions", type=int, help="vector size of the 1M-clip search latency run (64)"
    )
    parser.add_argument(
        "--growth-sizes",
        type=lambda text: tuple(int(size) for size in text.split(",")),
        help="clips of the growth table, e.g. 100000,1000000,3000000",
    )
    parser.add_argument(
        "--growth-write-max", type=int, help="the growth table's write paths stop here (1000000)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.search_dimensions:
        sizes = dataclasses.replace(sizes, search_clips_dimensions=args.search_dimensions)
    if args.growth_sizes:
        sizes = dataclasses.replace(sizes, growth_sizes=args.growth_sizes)
    if args.growth_write_max:
        sizes = dataclasses.replace(sizes, growth_write_max=args.growth_write_max)
    started = time.perf_counter()
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    bench = Bench(
        database=BenchDatabase(server_url()),
        redis_url=redis_url,
        marker=f"bench-{uuid.uuid4().hex[:12]}",
        sizes=sizes,
    )
    for line in machine_lines(bench.database, redis_url):
        print(line, flush=True)
    total = Outcome()
    try:
        for scenario in SCENARIOS:
            if args.only and scenario.__name__ not in args.only:
                continue
            try:
                outcome = scenario(bench)
            except Exception as err:  # one broken scenario must not hide the others' numbers
                traceback.print_exc()
                outcome = Outcome(checks=[Check(f"{scenario.__name__} ran", 0, "= ran", False)])
                print(f"{scenario.__name__} failed: {err}", file=sys.stderr)
            total.results += outcome.results
            total.checks += outcome.checks
    finally:
        bench.database.drop()
        bench.forget_cache()
    print()
    print("\n".join(result_table(total.results)))
    print()
    print("Targets")
    print("\n".join(check_lines(total.checks)))
    print(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s")
    if args.quick:
        print("--quick: sizes too small for the targets; this run checks the harness only")
        return 0
    missed = [check.name for check in total.checks if check.met is False]
    if missed:
        print(f"Targets missed: {'; '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
