"""The growth page: the measured table and a 10,000,000-clip plan worked from it.

Pure arithmetic over what `growth.py` measured, so the page is regenerated with its numbers.
Sources: pgvector's storage sizes (4 bytes per dimension + 8 for `vector`, 2 + 8 for
`halfvec`; https://github.com/pgvector/pgvector#vector-type), OpenAI's rate limits
(https://platform.openai.com/docs/guides/rate-limits).
"""

import math
from dataclasses import dataclass, field

PLAN_CLIPS = 10_000_000
PACE = 0.9
# text-embedding-3-small, (RPM, TPM). Tiers 1 and 5 as the issue gives them; tier 4 as OpenAI
# published it (https://github.com/openai/openai-cookbook, examples/data/oai_docs/tier-four.txt);
# tiers 2 and 3 are assumptions: OpenAI shows them per account, at /settings/organization/limits.
TIERS = {
    "1": (3_000, 1_000_000),
    "2 (assumed)": (5_000, 1_000_000),
    "3 (assumed)": (5_000, 5_000_000),
    "4": (10_000, 5_000_000),
    "5": (10_000, 10_000_000),
}
VALUE_BYTES = {"vector": 4, "halfvec": 2}
GIB = 2**30


@dataclass
class SizeRun:
    """One size of the table: the read probe's summary, the write runs' (None: not run)."""

    clips: int
    reads: dict | None = None
    writes: dict | None = None


@dataclass
class Growth:
    """Everything the page shows: the sizes asked for, those measured, the plan's inputs."""

    sizes: tuple[int, ...]
    write_max: int
    dimensions: int  # of the table runs
    served_dimensions: int
    runs: list[SizeRun] = field(default_factory=list)
    samples: dict = field(default_factory=dict)  # storage -> search_probe summary at served size
    pace: dict = field(default_factory=dict)  # the 300 ms backfill: rate, tokens, packing
    workers_per_machine: int = 2


def _ms(d: dict | None, key: str) -> str:
    if not d:
        return "-"
    return f"{d[key]['p50_ms']:.1f} / {d[key]['p95_ms']:.1f}"


def _cell(run: SizeRun, write_max: int, row: str) -> str:
    r, w = run.reads, run.writes
    if row.startswith("w:"):
        if w is None:
            return "not run" if run.clips > write_max else "-"
        return WRITE_ROWS[row](w)
    return READ_ROWS[row](r) if r else "-"


WRITE_ROWS = {
    "w:backfill, default flags (clips/s wall; mode)": lambda w: (
        f"{w['backfill']['rate']:,.0f} ({w['backfill']['mode']})"
    ),
    "w:  its writes alone (clips/s, HNSW build excluded)": lambda w: (
        f"{w['backfill']['pipeline_rate']:,.0f}"
    ),
    "w:  rebuild: its HNSW build (s)": lambda w: f"{w['backfill']['build_seconds']:.0f}",
    "w:bulk rewrite, --force (clips/s wall; mode)": lambda w: (
        f"{w['bulk']['rate']:,.0f} ({w['bulk']['mode']})"
    ),
    "w:switch_embeddings (clips/s wall)": lambda w: f"{w['switch']['rate']:,.0f}",
    "w:peak RSS of the backfill (MiB)": lambda w: f"{w['backfill']['peak_mib']:.0f}",
}
READ_ROWS = {
    "coverage page p50 / p95 (ms)": lambda r: _ms(r, "coverage_page"),
    "/metrics p50 / p95 (ms)": lambda r: _ms(r, "metrics"),
    "vector search p50 / p95 (ms)": lambda r: _ms(r["modes"], "vector"),
    "vector recall@10 vs exact": lambda r: f"{r['vector_recall']:.3f}",
    "hybrid search p50 / p95 (ms)": lambda r: _ms(r["modes"], "hybrid"),
    "hybrid recall@10 vs exact": lambda r: f"{r['hybrid_recall']:.3f}",
    "site INSERT p50 / p95 (ms)": lambda r: _ms(r, "insert"),
    "COPY load / GIN / HNSW build (s)": lambda r: (
        f"{r['load_seconds']:.0f} / {r['gin_seconds']:.0f} / {r['hnsw_seconds']:.0f}"
    ),
    "bytes per row: table / HNSW / other indexes": lambda r: (
        f"{r['table_bytes'] / r['clips']:,.0f} / {r['hnsw_bytes'] / r['clips']:,.0f}"
        f" / {r['other_index_bytes'] / r['clips']:,.0f}"
    ),
}


def table_lines(g: Growth) -> list[str]:
    """The growth table, metrics down, sizes across, as markdown."""
    by_size = {run.clips: run for run in g.runs}
    runs = [by_size.get(size, SizeRun(size)) for size in g.sizes]
    lines = [
        "| measured | " + " | ".join(f"{size:,}" for size in g.sizes) + " |",
        "|---|" + "---:|" * len(g.sizes),
    ]
    for row in (*WRITE_ROWS, *READ_ROWS):
        cells = [_cell(run, g.write_max, row) for run in runs]
        lines.append(f"| {row.removeprefix('w:')} | " + " | ".join(cells) + " |")
    return lines


def _largest(g: Growth) -> SizeRun | None:
    measured = [run for run in g.runs if run.reads]
    return max(measured, key=lambda run: run.clips) if measured else None


def build_seconds_at(g: Growth, clips: int) -> float | None:
    """HNSW build seconds at the table runs' size, extrapolated as clips^a, with `a` from the
    two largest sizes measured (1 if only one)."""
    builds = sorted((run.clips, run.reads["hnsw_seconds"]) for run in g.runs if run.reads)
    if not builds:
        return None
    (n1, t1), (n2, t2) = builds[-2] if len(builds) > 1 else builds[-1], builds[-1]
    exponent = math.log(t2 / t1) / math.log(n2 / n1) if n2 > n1 else 1.0
    return t2 * (clips / n2) ** exponent


def plan_lines(g: Growth) -> list[str]:
    """The 10,000,000-clip plan: disk, build memory and time, API hours, workers."""
    largest = _largest(g)
    if largest is None or not g.samples or not g.pace:
        return ["Not enough measured yet for the plan."]
    r, n, d = largest.reads, largest.clips, g.dimensions
    rest = r["table_bytes"] / n - (VALUE_BYTES["vector"] * d + 8)  # the row less its vector
    others = r["other_index_bytes"] / n
    smallest = min(run.clips for run in g.runs if run.reads)
    at_sample = next(run.reads["hnsw_seconds"] for run in g.runs if run.clips == smallest)
    at_plan = build_seconds_at(g, PLAN_CLIPS)
    lines = [
        f"At {g.served_dimensions} dimensions (the served size). Table and other indexes: bytes"
        f" per row at {n:,} clips, its {d}-dimension vector swapped for a {g.served_dimensions}"
        f"-dimension one (pgvector: 4 bytes per dimension + 8 for vector, 2 + 8 for halfvec);"
        f" HNSW: bytes per row of the index built over {smallest:,} x {g.served_dimensions};"
        f" build memory: {r['graph_overhead_bytes']} bytes per vector beyond its values (the"
        " tool's own figure, from pgvector's \"no longer fits\" notice) plus a tenth; build time:"
        f" the {d}-dimension builds extrapolated as clips^a (a from the two largest sizes run),"
        f" times the {g.served_dimensions}/{d}-dimension build-time ratio at {smallest:,}.",
        "",
        "| storage | table | HNSW | other indexes | total disk | maintenance_work_mem"
        " | HNSW build (2 cores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for storage, sample in g.samples.items():
        value = VALUE_BYTES[storage] * g.served_dimensions
        table = PLAN_CLIPS * (rest + value + 8)
        hnsw = PLAN_CLIPS * sample["index_mib"] * 2**20 / sample["clips"]
        index = PLAN_CLIPS * others
        memory = PLAN_CLIPS * (value + r["graph_overhead_bytes"]) * 1.1
        build = at_plan * sample["index_build_seconds"] / at_sample
        lines.append(
            f"| {storage}({g.served_dimensions}) | {table / GIB:,.1f} GiB | {hnsw / GIB:,.1f} GiB"
            f" | {index / GIB:,.1f} GiB | {(table + hnsw + index) / GIB:,.1f} GiB"
            f" | {memory / GIB:,.1f} GiB | {build / 3600:,.1f} h |"
        )
    return [*lines, "", *_budget_lines(g)]


def _budget_lines(g: Growth) -> list[str]:
    p = g.pace
    tokens, packing, rate = p["tokens_per_clip"], p["clips_per_request"], p["rate"]
    lines = [
        f"API budget for {PLAN_CLIPS:,} clips: {tokens:.1f} tokens per demo clip (the tool's"
        f" estimate, UTF-8 bytes / 4, as its limiter counts them), {packing:,.0f} clips per"
        f" request (EMBEDDING_MAX_INPUTS_PER_REQUEST {p['max_inputs']:,}, as the backfill packed"
        f" them). Workers: one `backfill_embeddings` process embedded {rate:,.0f} clips/s with"
        f" the server answering in 300 ms; a qcluster worker is counted as one such process,"
        f" {g.workers_per_machine} per machine (Q_WORKERS' default), all sharing one Redis"
        f" limiter, to hold {PACE:.0%} of the binding limit.",
        "",
        "| OpenAI tier | RPM | TPM | binding | clips/s at 90% | hours for 10M at 90%"
        " | workers | machines |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for tier, (rpm, tpm) in TIERS.items():
        by_tokens, by_requests = tpm / tokens, rpm * packing  # clips per minute
        ceiling = min(by_tokens, by_requests)
        target = PACE * ceiling / 60
        hours = PLAN_CLIPS / target / 3600
        workers = math.ceil(target / rate)
        lines.append(
            f"| {tier} | {rpm:,} | {tpm:,} | {'TPM' if by_tokens <= by_requests else 'RPM'}"
            f" | {target:,.0f} | {hours:,.1f} | {workers} |"
            f" {math.ceil(workers / g.workers_per_machine)} |"
        )
    return lines


def page(g: Growth, machine: list[str], command: str, date: str, notes: list[str]) -> str:
    """docs/performance-growth.md: generated, so edits belong in tests/benchmarks/growth*.py."""
    done = ", ".join(f"{run.clips:,}" for run in g.runs) or "none"
    return "\n".join(
        [
            "# Growth: the tool from 100,000 clips up, and a 10,000,000-clip plan",
            "",
            "Generated by `make bench` (the `growth` scenario, tests/benchmarks/growth.py);"
            " regenerate it rather than edit it.",
            "",
            f"Command: `{command}`  ",
            f"Date: {date}; sizes measured: {done}  ",
            *[f"{line}  " for line in machine],
            "",
            "## The table",
            "",
            *notes,
            "",
            *table_lines(g),
            "",
            "## 10,000,000 clips",
            "",
            *plan_lines(g),
            "",
        ]
    )
