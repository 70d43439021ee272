"""The printed table: one row per measured run, then the targets of the issues."""

from collections.abc import Sequence

from tests.benchmarks.scenarios import Check, Result

HEADER = ("scenario", "items", "seconds", "rate/s", "peak RSS", "notes")


def result_table(results: Sequence[Result]) -> list[str]:
    rows = [HEADER]
    for r in results:
        rss = f"{r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib is not None else "-"
        rows.append(
            (
                f"{r.section}: {r.name}",
                f"{r.items:,} {r.unit}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                rss,
                r.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    right = {1, 2, 3, 4}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def check_lines(checks: Sequence[Check]) -> list[str]:
    width = max((len(c.name) for c in checks), default=0)
    return [
        f"{c.name.ljust(width)}  {c.value:6.2f}  target {c.target:8}  "
        f"{'info' if c.met is None else 'met' if c.met else 'MISSED'}"
        for c in checks
    ]
