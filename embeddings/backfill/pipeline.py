"""The backfill pipeline: select, embed, write, with the three stages overlapped.

One reader thread claims batches of clips (keyset order), `concurrency` embedder threads
merge queued batches into requests as large as the API allows, and `WRITERS` writer threads
store the vectors. Queues between the stages are bounded, so memory does not grow with the table.
The command, the django-q2 tasks and the admin actions all run this; none re-implements it.
"""

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.db import connection

from embeddings.backfill.claims import ClaimedClip, claim_next, release
from embeddings.backfill.selection import Selection
from embeddings.backfill.writer import EmbeddedClip, record_failures, write_embeddings
from embeddings.exceptions import (
    EmbeddingError,
    Failure,
    FailureKind,
    FatalProviderError,
    RunAborted,
    exit_code,
)
from embeddings.service.embedding_service import EmbeddingService
from embeddings.service.stats import EmbeddingStats

logger = logging.getLogger(__name__)

CHANGED = Failure.of(FailureKind.CHANGED)
_DONE = object()
# One UPDATE of 2,000 clips takes ~280 ms of PostgreSQL here (new TOAST rows, every index,
# the generated columns): with one writer that is the pipeline's pace on a large table. Two
# write disjoint clips on two connections, so the server works on both cores.
WRITERS = 2


@dataclass(frozen=True)
class Follow:
    """Live sync: instead of one pass, keep claiming clips as they come to need a vector.

    Claimed clips wait up to `gather_seconds` for company before they are sent, so a stream
    of saves becomes few large requests; the run ends after `idle_seconds` with nothing to
    claim, or after `max_seconds` (a django-q2 task must end inside the cluster's timeout).
    """

    gather_seconds: float
    idle_seconds: float = 10.0
    poll_seconds: float = 0.25
    max_seconds: float = 600.0


@dataclass(frozen=True)
class BackfillOptions:
    selection: Selection
    batch_size: int = 50
    limit: int | None = None
    dry_run: bool = False
    follow: Follow | None = None


@dataclass
class BackfillProgress:
    """Counts so far; the final one is the run's summary."""

    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False
    fatal: EmbeddingError | None = None
    index_build_seconds: float | None = None  # the rebuild mode's one HNSW build, at the end
    held_elsewhere: int = 0  # selected clips another live run held: that run embeds them
    reasons: Counter[str] = field(default_factory=Counter)
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)

    @property
    def done(self) -> int:
        return self.processed + self.skipped + self.failed

    @property
    def duration(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return exit_code(self.fatal)
        return 1 if self.failed or self.interrupted else 0


class Backfill:
    """One run of the pipeline. `stop()` (e.g. from a signal) finishes what is in flight."""

    def __init__(
        self,
        service: EmbeddingService,
        options: BackfillOptions,
        *,
        run_id: int | None,
        total: int | None = None,
        on_progress: Callable[[BackfillProgress], None] | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """`total`: the selection's size where the caller has just counted it."""
        self.service = service
        self.options = options
        self.run_id = None if options.dry_run else run_id
        self.on_progress = on_progress or (lambda progress: None)
        self.on_poll = on_poll or (lambda: None)  # a following run is alive (each claim)
        self.progress = BackfillProgress()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._reporting = threading.Lock()  # one progress report at a time, from any writer
        # The reader claims a request's worth of batches per statement; two such windows
        # queued keep the embedders busy, and bound memory whatever the table's size.
        self._window = options.batch_size * max(1, service.limits.max_inputs // options.batch_size)
        self._to_embed: queue.Queue = queue.Queue(maxsize=2 * self._window // options.batch_size)
        self._to_write: queue.Queue = queue.Queue(maxsize=WRITERS)
        self._total = total
        self._in_flight = 0  # embedding requests sent and not yet answered

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered: what `stop()` lets finish."""
        return self._in_flight

    def count(self) -> int:
        """How many clips the run selects (counted once); a following run counts as it claims."""
        if self.options.follow is not None:
            return 0
        if self._total is None:
            total = self.options.selection.queryset().count()
            limit = self.options.limit
            self._total = min(total, limit) if limit is not None else total
        return self._total

    def stop(self) -> None:
        self.progress.interrupted = True
        self._stop.set()

    def run(self) -> BackfillProgress:
        self.progress.total = self.count()
        self.on_progress(self.progress)
        embedders = [
            threading.Thread(target=self._embed_loop, name=f"embedder-{i}", daemon=True)
            for i in range(self.service.concurrency)
        ]
        stages = [threading.Thread(target=self._read_loop, name="reader", daemon=True)]
        stages += embedders
        stages += [
            threading.Thread(target=self._write_loop, name=f"writer-{i}", daemon=True)
            for i in range(WRITERS)
        ]
        for thread in stages:
            thread.start()
        for thread in embedders:
            _join(thread)
        for _ in range(WRITERS):
            self._to_write.put(_DONE)
        for thread in stages:
            _join(thread)
        self.progress.finished = time.monotonic()
        return self.progress

    def _read_loop(self) -> None:
        try:
            if self.options.follow is not None:
                self._follow(self.options.follow)
                return
            cursor, taken = None, 0
            limit = self.options.limit
            while not self._stop.is_set() and (limit is None or taken < limit):
                size = self._window if limit is None else min(self._window, limit - taken)
                clips, next_cursor, held = claim_next(
                    self.options.selection, after_id=cursor, limit=size, run_id=self.run_id
                )
                if next_cursor is None:
                    break
                cursor = next_cursor
                taken += len(clips)
                self._held_elsewhere(held)
                self._queue(clips)
        except Exception as err:
            logger.error("reading clips failed: %s", err)
            self._fail_fatally(RunAborted(f"reading clips failed: {err}"))
        finally:
            for _ in range(self.service.concurrency):
                self._to_embed.put(_DONE)
            connection.close()

    def _held_elsewhere(self, clips: int) -> None:
        with self._lock:
            self.progress.held_elsewhere += clips

    def _queue(self, clips: list[ClaimedClip]) -> None:
        batch = self.options.batch_size
        for start in range(0, len(clips), batch):
            self._to_embed.put(clips[start : start + batch])

    def _follow(self, follow: Follow) -> None:
        """Claim from the start of the key order at every poll (an edited clip may sit below
        the cursor); hold what is claimed until a request's worth or `gather_seconds`."""
        held: list[ClaimedClip] = []
        cursor = None
        held_since = last_claim = started = time.monotonic()
        while not self._stop.is_set():
            clips, next_cursor, elsewhere = claim_next(
                self.options.selection,
                after_id=cursor,
                limit=self._window - len(held),
                run_id=self.run_id,
            )
            self._held_elsewhere(elsewhere)
            now = time.monotonic()
            if clips:
                held_since = held_since if held else now
                held += clips
                last_claim = now
                with self._lock:
                    self.progress.total += len(clips)
            if held and (len(held) >= self._window or now - held_since >= follow.gather_seconds):
                self._queue(held)
                held = []
            self.on_poll()
            cursor = next_cursor
            if next_cursor is not None:
                continue  # more selected clips after the cursor: read on at once
            idle = now - last_claim >= follow.idle_seconds
            if not held and (idle or now - started >= follow.max_seconds):
                break
            self._stop.wait(follow.poll_seconds)
        self._queue(held)

    def _embed_loop(self) -> None:
        try:
            for batches in self._requests():
                if self._stop.is_set():  # interrupted or failed: only what is in flight finishes
                    self._release(batches)
                    continue
                try:
                    self._embed(batches)
                except Exception as err:
                    logger.exception("embedding a batch failed unexpectedly")
                    self._fail_fatally(RunAborted(f"embedding failed: {err}"))
                    self._release(batches)
        finally:
            connection.close()

    def _requests(self) -> Iterator[list[list[ClaimedClip]]]:
        """Groups of queued batches, each as large as one request may be, until this
        embedder takes its end marker. A batch that does not fit waits for the next group
        in this embedder: put back on the queue, it could land behind the end markers."""
        carry: list[ClaimedClip] | None = None
        finished = False
        limit = self.service.limits.max_inputs
        while carry is not None or not finished:
            if carry is None:
                first = self._to_embed.get()
                if first is _DONE:
                    return
            else:
                first, carry = carry, None
            batches, size = [first], len(first)
            while not finished and size < limit:
                try:
                    more = self._to_embed.get_nowait()
                except queue.Empty:
                    break
                if more is _DONE:
                    finished = True
                elif size + len(more) > limit:
                    carry = more
                    break
                else:
                    batches.append(more)
                    size += len(more)
            yield batches

    def _embed(self, batches: list[list[ClaimedClip]]) -> None:
        clips = [clip for batch in batches for clip in batch]
        with self._lock:
            self._in_flight += 1
        try:
            result = self.service.embed([clip.text for clip in clips])
        except FatalProviderError as err:
            self._fail_fatally(err)
            self._release(batches)
            return
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self.progress.stats.add(result.stats)
        # The batches of one request are written together: one transaction, one COPY.
        embedded = [
            EmbeddedClip(clip.id, clip.text_hash, vector)
            for clip, vector in zip(clips, result.vectors, strict=True)
            if vector is not None
        ]
        errors = {clips[position].id: reason for position, reason in result.errors.items()}
        self._to_write.put((embedded, errors))

    def _write_loop(self) -> None:
        try:
            while (item := self._to_write.get()) is not _DONE:
                if self.progress.fatal is not None:
                    continue  # keep draining so the embedders never block on a full queue
                try:
                    self._write(*item)
                except Exception as err:
                    logger.error("writing embeddings failed: %s", err)
                    self._fail_fatally(RunAborted(f"writing to the database failed: {err}"))
        finally:
            connection.close()

    def _write(self, embedded: list[EmbeddedClip], errors: dict[int, Failure]) -> None:
        selection = self.options.selection
        if self.options.dry_run:
            written = {clip.id for clip in embedded}
        else:
            written = write_embeddings(
                embedded,
                model=selection.model,
                dimensions=selection.dimensions,
                run_id=self.run_id,
                version_id=selection.version_id,
            )
            # A clip's failure is kept on it for the served vectors; a build's failures are
            # counted by its run, and the next pass of the build tries them again.
            failures = {} if selection.version_id is not None else errors
            record_failures({i: str(f) for i, f in failures.items()}, run_id=self.run_id)
            release([i for i in errors if i not in failures], self.run_id)
        changed = [clip.id for clip in embedded if clip.id not in written]
        release(changed, self.run_id)
        with self._lock:
            p = self.progress
            p.processed += len(written)
            skipped = sum(1 for failure in errors.values() if failure.kind.skipped)
            p.skipped += skipped + len(changed)
            p.failed += len(errors) - skipped
            p.reasons.update(str(failure) for failure in errors.values())
            p.reasons.update([str(CHANGED)] * len(changed))
        with self._reporting:
            self.on_progress(self.progress)

    def _fail_fatally(self, error: EmbeddingError) -> None:
        with self._lock:
            if self.progress.fatal is None:
                self.progress.fatal = error
        self._stop.set()

    def _release(self, batches: list[list[ClaimedClip]]) -> None:
        """Free claims early; if the database is gone, the run's lease frees them anyway."""
        try:
            release([clip.id for batch in batches for clip in batch], self.run_id)
        except Exception:
            logger.warning("could not release claims; they lapse with this run's lease")


def _join(thread: threading.Thread) -> None:
    """Join in short waits: the main thread stays free to run a signal handler at once (a
    second Ctrl-C must not wait for the requests in flight)."""
    while thread.is_alive():
        thread.join(0.2)
