"""How a run shows itself: a live bar on a terminal, plain `Progress:` lines otherwise,
and the old tool's summary block."""

import time
from decimal import Decimal
from typing import TextIO

from tqdm import tqdm

from embeddings.backfill.pipeline import BackfillProgress

PLAIN_EVERY_SECONDS = 2.0


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:.1f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{rest:.0f}s"


def progress_line(p: BackfillProgress) -> str:
    percent = 100.0 * p.done / p.total if p.total else 100.0
    return (
        f"Progress: {p.done}/{p.total} ({percent:.1f}%) - processed: {p.processed}, "
        f"skipped: {p.skipped}, failed: {p.failed}"
    )


class ProgressReporter:
    def __init__(self, out: TextIO, *, enabled: bool = True) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = enabled and hasattr(out, "isatty") and out.isatty()
        self._bar: tqdm | None = None
        self._last_line = 0.0
        self._last: BackfillProgress | None = None
        self._last_written = ""

    def update(self, p: BackfillProgress) -> None:
        if not self._enabled:
            return
        self._last = p
        if self._tty:
            if self._bar is None:
                self._bar = tqdm(total=p.total, unit="clip", dynamic_ncols=True, file=self._out)
            self._bar.n = p.done
            self._bar.set_postfix(ok=p.processed, skip=p.skipped, fail=p.failed, refresh=False)
            self._bar.refresh()
        elif time.monotonic() - self._last_line >= PLAIN_EVERY_SECONDS:
            self._last_line = time.monotonic()
            self._write_line(progress_line(p))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._enabled and self._last is not None:
            self._write_line(progress_line(self._last))  # the final count, unless just shown

    def _write_line(self, line: str) -> None:
        if line != self._last_written:
            self._out.write(line)
            self._last_written = line


def summary_lines(p: BackfillProgress, cost: Decimal | None, *, dry_run: bool) -> list[str]:
    per_clip = p.duration / p.done if p.done else 0.0
    s = p.stats
    lines = [
        "",
        "=== Backfill Summary ===" + (" (dry run: nothing written)" if dry_run else ""),
        f"Total clips: {p.total}",
        f"Processed: {p.processed}",
        f"Skipped: {p.skipped}",
        f"Failed: {p.failed}",
        f"Duration: {format_duration(p.duration)}"
        + (
            f" (the HNSW index build: {format_duration(p.index_build_seconds)})"
            if p.index_build_seconds is not None
            else ""
        ),
        f"Average time per clip: {format_duration(per_clip)}",
        f"Requests: {s.requests} (retries: {s.retries}, rate limited: {s.rate_limited})",
        f"Cache: {s.cache_hits} hits, {s.cache_misses} misses"
        + (f" ({s.shared} answered by a request already in flight)" if s.shared else ""),
        f"Tokens: {s.tokens}",
        f"Cost: ${cost:.6f}" if cost is not None else "Cost: unknown for this model",
    ]
    if dry_run:
        lines.append(f"Would write: {p.processed} embeddings")
    for reason, count in p.reasons.most_common(5):
        lines.append(f"  {count} x {reason}")
    if p.fatal is not None:
        lines.append(f"Stopped: {p.fatal}")
    elif p.interrupted:
        lines.append("Interrupted: run again to continue where this run stopped")
    return lines
