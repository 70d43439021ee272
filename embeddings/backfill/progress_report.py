"""How a run shows itself: a live bar on a terminal, plain `Progress:` lines otherwise,
and the old tool's summary block."""

import shutil
import threading
import time
from collections import deque
from decimal import Decimal
from typing import TextIO

from embeddings.backfill.pipeline import BackfillProgress

PLAIN_EVERY_SECONDS = 2.0  # at most this often as the counts change
TERMINAL_EVERY_SECONDS = 1.0  # the live line on a terminal, whether or not anything changed
LOG_EVERY_SECONDS = 30.0  # a line in a log at least this often, whether or not anything changed
RATE_WINDOW_SECONDS = 60.0  # the rate is of the last minute: the ETA follows a change of pace


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


def format_eta(seconds: float) -> str:
    """A time left as people say it: "45 s", "1 min 20 s", "2 h 5 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def progress_line(p: BackfillProgress, rate: float | None = None) -> str:
    """`Progress: done/total (pct%) - counts`, then, with `rate` (clips/s), the time left."""
    percent = 100.0 * p.done / p.total if p.total else 100.0
    line = (
        f"Progress: {p.done}/{p.total} ({percent:.1f}%) - processed: {p.processed}, "
        f"skipped: {p.skipped}, failed: {p.failed}"
    )
    if rate is None:
        return line
    left = max(0, p.total - p.done)
    if rate <= 0:
        return line + (" - waiting for the first answers" if left else "")
    shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
    eta = f", about {format_eta(left / rate)} left" if left else ""
    return line + f" - {shown} clips/s{eta}"


class RateMeter:
    """Clips per second over the last RATE_WINDOW_SECONDS of samples (done, at a time)."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, done: int, now: float) -> None:
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        return (last - first) / (last_at - first_at) if last_at > first_at else 0.0


class ProgressReporter:
    """`Progress:` lines with the rate and the time left: on a terminal one live line redrawn
    every second; otherwise a line as the counts change (at most every 2 s) and at least every
    30 s while nothing changes, so a log shows the run is alive."""

    def __init__(self, out: TextIO, *, enabled: bool = True, every: float | None = None) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = enabled and hasattr(out, "isatty") and out.isatty()
        self._every = every or (TERMINAL_EVERY_SECONDS if self._tty else LOG_EVERY_SECONDS)
        self._lock = threading.Lock()
        self._meter = RateMeter()
        self._last_line = time.monotonic()
        self._last: BackfillProgress | None = None
        self._last_written = ""
        self._drawn = False  # a live line is on the terminal, to end with a newline
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None

    def update(self, p: BackfillProgress) -> None:
        if not self._enabled:
            return
        with self._lock:
            self._last = p
            now = time.monotonic()
            self._meter.add(p.done, now)
            if self._tty:
                self._draw(p)
            elif now - self._last_line >= PLAIN_EVERY_SECONDS:
                self._plain(p, now)
            if self._ticker is None and not self._closed.is_set():
                self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
                self._ticker.start()

    def close(self) -> None:
        self._closed.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)
        with self._lock:
            if not self._enabled or self._last is None:
                return
            self._meter.add(self._last.done, time.monotonic())
            if self._tty:
                self._draw(self._last)
                if self._drawn:
                    self._raw("\n")
                    self._drawn = False
            else:
                self._plain(self._last, time.monotonic())  # the final count, unless just shown
            self._enabled = False  # closed: a second close writes nothing

    def _tick(self) -> None:
        """Every second: redraw the terminal line, or write a log line if none for a while."""
        while not self._closed.wait(min(1.0, self._every)):
            with self._lock:
                if self._last is None or self._closed.is_set():
                    continue
                now = time.monotonic()
                self._meter.add(self._last.done, now)
                if self._tty:
                    self._draw(self._last)
                elif now - self._last_line >= self._every:
                    self._plain(self._last, now)

    def _plain(self, p: BackfillProgress, now: float) -> None:
        self._last_line = now
        line = progress_line(p, self._meter.rate())
        if line != self._last_written:
            self._out.write(line)
            self._last_written = line

    def _draw(self, p: BackfillProgress) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        line = progress_line(p, self._meter.rate())[:width]
        self._raw("\r" + line + "\x1b[K")
        self._drawn = True

    def _raw(self, text: str) -> None:
        stream = getattr(self._out, "_out", self._out)  # past Django's OutputWrapper newline
        stream.write(text)
        stream.flush()


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
    if p.held_elsewhere:
        lines.append(f"Held by another run: {p.held_elsewhere} (that run embeds them)")
    if dry_run:
        lines.append(f"Would write: {p.processed} embeddings")
    for reason, count in p.reasons.most_common(5):
        lines.append(f"  {count} x {reason}")
    if p.fatal is not None:
        lines.append(f"Stopped: {p.fatal}")
    elif p.interrupted:
        lines.append("Interrupted: run again to continue where this run stopped")
    return lines
