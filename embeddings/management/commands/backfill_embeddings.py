"""`manage.py backfill_embeddings`: embed every live clip that lacks a current vector.

A thin door into `embeddings.backfill.runs.execute_backfill`; the old Go tool's flags
(`-batch 100 -force -dry-run`) keep working beside the `--long` spellings.
"""

import gc
import json
import os
import signal
import sys
import threading
import time as clock
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, time, timedelta

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, connection
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from embeddings.app_settings import MAX_CONCURRENCY, EmbeddingSettings
from embeddings.backfill.batch_api.jobs import execute_batch_job
from embeddings.backfill.batch_api.report import batch_lines
from embeddings.backfill.estimate import estimate, measure_local_rate
from embeddings.backfill.pipeline import Backfill, BackfillOptions, BackfillProgress
from embeddings.backfill.preflight import check_endpoint, preflight
from embeddings.backfill.progress_report import ProgressReporter, format_duration, summary_lines
from embeddings.backfill.runs import RunRecorder, cost_usd, execute_backfill
from embeddings.backfill.selection import Selection
from embeddings.backfill.site_vectors import check_site_vectors, site_vectors
from embeddings.backfill.switch import SwitchOptions, rewrite_served
from embeddings.backfill.write_mode import WriteMode, choose_write_mode
from embeddings.management.base import EmbeddingCommand
from embeddings.models import BackfillRun, served_settings, site_vector_q
from embeddings.service.factory import (
    build_batch_client,
    build_embedding_cache,
    build_embedding_service,
)
from embeddings.tasks import enqueue_backfill

MAX_BATCH = 2048


SINCE_FORMS = (
    "today, yesterday, an age such as 7d, 12h or 30m, or an ISO date or time such as "
    "2026-01-31 or 2026-01-31T08:00"
)
AGES = {"d": "days", "h": "hours", "m": "minutes"}


def _created_after(value: str) -> datetime:
    """What `--since` / `--created-after` accepts (SINCE_FORMS), as an aware datetime; a
    CommandError (exit 2) naming the accepted forms for anything else."""
    text = value.strip().lower()
    today = datetime.combine(timezone.localdate(), time.min)
    if text in ("today", "yesterday"):
        parsed = today - timedelta(days=1 if text == "yesterday" else 0)
    elif len(text) > 1 and text[:-1].isdigit() and text[-1] in AGES:
        return timezone.now() - timedelta(**{AGES[text[-1]]: int(text[:-1])})
    else:
        try:
            parsed = parse_datetime(value.strip())
            day = parse_date(value.strip()) if parsed is None else None
        except ValueError:  # well formed but impossible, such as 2026-02-30
            parsed = day = None
        if day is not None:
            parsed = datetime.combine(day, time.min)
        if parsed is None:
            raise CommandError(f"--since {value!r} is not a date: use {SINCE_FORMS}", returncode=2)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def _money(value) -> float | None:
    return float(value) if value is not None else None


STOPPED_NOW_EXIT = 130  # the shell's code for a run ended by Ctrl-C
EPILOG = (
    "Ctrl-C (or SIGTERM) stops claiming clips and finishes the requests in flight, then prints "
    "the summary and exits 1 (interrupted). A second Ctrl-C stops at once: the answers in "
    f"flight are lost, as with a kill, the run is recorded as interrupted, its claims are freed "
    f"and the exit code is {STOPPED_NOW_EXIT}. Run again to continue either way."
)


BATCH_STOPPING = (
    "stopping after this step of the Batch API job; submitted batches go on at the API and "
    "`backfill_embeddings --batch-api --wait` collects them"
)


def _refuse_combined(door: str, opts: dict, flags: tuple[str, ...]) -> None:
    """Exit 2 naming the flags among `flags` that were given with `door`."""
    given = ["--" + flag.replace("_", "-") for flag in flags if opts[flag]]
    if given:
        raise CommandError(f"{door} cannot be combined with {', '.join(given)}", returncode=2)


class StopNow(BaseException):
    """A second Ctrl-C: raised in the main thread, out of whatever it waits on."""


@contextmanager
def _stop_on_signals(
    stop: Callable[[], object],
    *,
    said: Callable[[], str],
    write: Callable[[str], None],
    stop_now: bool = True,
) -> Iterator[None]:
    """SIGINT/SIGTERM call `stop` while the block runs; only the main thread may set them.

    Every signal writes `said()` at once; with `stop_now`, a second one raises StopNow."""
    previous = {}
    signals = []

    def handler(signum, frame) -> None:
        signals.append(signum)
        if len(signals) > 1 and stop_now:
            raise StopNow()
        stop()
        write(said())

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Command(EmbeddingCommand):
    help = "Embed live clips that have no current embedding (all live clips with --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.epilog = EPILOG
        parser.add_argument("--batch", "-batch", type=int, default=50, help="clips per batch (50)")
        parser.add_argument(
            "--force", "-force", action="store_true", help="re-embed clips that have a vector"
        )
        parser.add_argument(
            "--dry-run",
            "-dry-run",
            action="store_true",
            help="do everything except write to the database (answers still fill the cache)",
        )
        parser.add_argument("--limit", type=int, help="embed at most N clips")
        parser.add_argument(
            "--created-after",
            "--since",
            metavar="WHEN",
            help=f"only clips created at or after WHEN: {SINCE_FORMS}",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            help=f"requests in flight, 1-{MAX_CONCURRENCY} (default: EMBEDDING_CONCURRENCY)",
        )
        parser.add_argument(
            "--estimate",
            action="store_true",
            help="count clips, tokens, cost and time at the configured limits; no API calls",
        )
        parser.add_argument(
            "--rebuild-index",
            action="store_true",
            help="drop the HNSW index for the run and rebuild it after (fast large backfills)",
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="split the work into django-q2 tasks and return; qcluster workers do it",
        )
        parser.add_argument(
            "--chunk", type=int, default=1000, help="clips per queued task with --enqueue (1000)"
        )
        parser.add_argument(
            "--batch-api",
            action="store_true",
            help="submit the clips as OpenAI Batch API jobs (half price, 24 h window) and return",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="with --batch-api: wait for the batches, write their vectors, resubmit leftovers",
        )

    def handle(self, *args, **opts) -> None:
        # This process ends with the run: everything loaded so far (Django, the apps, numpy)
        # is put out of the collector's sight, so full collections during the run and the one
        # at exit skip it (measured: the exit 0.4-0.8 s -> 0.06 s). Here, not in the pipeline:
        # in a long-lived worker it would keep each task's leftovers for ever.
        # https://docs.python.org/3/library/gc.html#gc.freeze
        gc.freeze()
        config = served_settings()
        batch = opts["batch"]
        if not 1 <= batch <= MAX_BATCH:
            raise CommandError(f"--batch must be between 1 and {MAX_BATCH}", returncode=2)
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1", returncode=2)
        concurrency = opts["concurrency"]
        if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CommandError(
                f"--concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency} "
                "(leave it out for EMBEDDING_CONCURRENCY)",
                returncode=2,
            )
        concurrency = concurrency or config.concurrency
        created_after = None
        if opts["created_after"] is not None:
            created_after = _created_after(opts["created_after"])
        if not config.enabled:
            self.stderr.write(self.style.WARNING("EMBEDDING_ENABLED is false; running anyway."))
        preflight(config)
        if not (opts["estimate"] or opts["enqueue"]):  # both call no API from here
            check_endpoint(config)

        selection = Selection.of(
            config,
            force=opts["force"],
            created_after=created_after,
        )
        options = BackfillOptions(
            selection=selection, batch_size=batch, limit=opts["limit"], dry_run=opts["dry_run"]
        )
        if opts["estimate"]:
            self._estimate(options, config, as_json=opts["json"])
            return
        if opts["wait"] and not opts["batch_api"]:
            raise CommandError("--wait goes with --batch-api", returncode=2)
        if opts["batch_api"]:
            self._batch_api(options, config, opts)
            return
        if opts["enqueue"]:
            self._enqueue(selection, opts)
            return

        service = build_embedding_service(config, concurrency=concurrency)
        quiet = opts["json"] or opts["verbosity"] == 0
        if not opts["dry_run"]:
            check_site_vectors(
                service,
                config,
                on_step=None if quiet else lambda s: self.stdout.write(f"Step: {s}"),
            )
        plan = choose_write_mode(options, config, rebuild_index=opts["rebuild_index"])
        if not quiet:
            self.stdout.write("Starting embedding backfill")
            self.stdout.write(
                f"Configuration: batch={batch} force={str(opts['force']).lower()} "
                f"dry-run={str(opts['dry_run']).lower()} model={config.model} "
                f"dimensions={config.dimensions} concurrency={service.concurrency} "
                f"index={plan.mode} ({plan.why})"
            )
            self.stdout.write(
                f"Provider: {service.provider.describe()}; rate limiter: "
                f"{service.limiter.describe()}; cache: {service.cache_description()}"
            )
        reporter = ProgressReporter(self.stdout, enabled=not quiet)

        started: list[Backfill] = []

        def on_start(backfill: Backfill) -> None:
            started.append(backfill)
            if not quiet:
                total = backfill.count()
                self.stdout.write(f"Found {total} clips to process")

        def on_step(step: str) -> None:
            if not quiet:
                self.stdout.write(f"Step: {step}")

        def stopping() -> str:
            requests = sum(backfill.in_flight for backfill in started)
            return f"stopping: finishing {requests} requests in flight; Ctrl-C again to stop now"

        # SIGINT/SIGTERM finish the batches in flight; a second one stops at once.
        with _stop_on_signals(
            lambda: [backfill.stop() for backfill in started],
            said=stopping,
            write=self._say_now,
        ):
            try:
                if plan.mode == WriteMode.BULK:  # each pass of the rewrite makes its own service
                    progress, run = self._bulk(opts, concurrency, on_start, on_step, reporter)
                else:
                    progress, run = execute_backfill(
                        service,
                        options,
                        config,
                        trigger="command",
                        index_mode=plan.mode,
                        total=plan.work,
                        on_start=on_start,
                        on_progress=reporter.update,
                        on_step=on_step,
                    )
            except DatabaseError as err:
                raise _database_error(
                    err, "Nothing wrong was written; run again to continue."
                ) from None
            except StopNow:
                reporter.close()
                self._stopped_now(started, config, opts, index_mode=plan.mode)
            finally:
                reporter.close()
                service.close()
        self._summary(progress, config, run.pk if run else None, opts, index_mode=plan.mode)
        if progress.exit_code:
            raise CommandError(self._failure_message(progress), returncode=progress.exit_code)

    def _say_now(self, line: str) -> None:
        """A line from a signal handler: straight to the file descriptor, never through a
        buffer the interrupted code may be in the middle of writing."""
        try:
            os.write(sys.stderr.fileno(), (line + "\n").encode())
        except (OSError, ValueError, AttributeError):  # no real stderr (a test's StringIO)
            self.stderr.write(line)

    def _stopped_now(
        self, started: list[Backfill], config: EmbeddingSettings, opts: dict, *, index_mode
    ) -> None:
        """A second Ctrl-C: the run's lease is closed (claims freed) by `execute_backfill` on
        the way out; record the run as interrupted with its counts so far, print the summary
        and leave without waiting for the requests in flight (their answers are lost)."""
        connection.close()  # the signal may have cut a query of this thread short
        progress = started[-1].progress if started else None
        run_id = started[-1].run_id if started else None
        try:
            if progress is not None:
                progress.interrupted = True
                progress.finished = progress.finished or clock.monotonic()
            if progress is not None and run_id is not None:
                run = BackfillRun.objects.filter(pk=run_id).first()
                if run is not None and run.status == BackfillRun.Status.RUNNING:
                    RunRecorder(run, config).finish(progress)
            if progress is not None:
                self._summary(progress, config, run_id, opts, index_mode=index_mode)
            self.stderr.write("stopped now: the answers in flight were lost; run again to continue")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # Not through interpreter shutdown: it would wait for the requests in flight.
            os._exit(STOPPED_NOW_EXIT)

    def _bulk(
        self,
        opts: dict,
        concurrency: int,
        on_start: Callable[[Backfill], None],
        on_step: Callable[[str], None],
        reporter: ProgressReporter,
    ) -> tuple[BackfillProgress, BackfillRun | None]:
        """The served version rewritten through build rows: search keeps its index."""
        options = SwitchOptions(
            batch_size=opts["batch"],
            concurrency=concurrency,
            force=opts["force"],
            trigger="command",
            on_step=on_step,
            on_start=on_start,
            on_progress=reporter.update,
        )
        result = rewrite_served(options)
        return result.progress, result.last_run

    def _batch_api(self, options: BackfillOptions, config: EmbeddingSettings, opts: dict) -> None:
        _refuse_combined("--batch-api", opts, ("dry_run", "enqueue", "rebuild_index"))
        client = build_batch_client(config)
        quiet = opts["json"] or opts["verbosity"] == 0
        if not quiet:
            self.stdout.write(
                f"Submitting to the Batch API: model={config.model} "
                f"dimensions={config.dimensions} queue limit={config.batch_queue_tokens} tokens"
                + (" (waiting for the answers)" if opts["wait"] else "")
            )
        reporter = ProgressReporter(self.stdout, enabled=not quiet and opts["wait"])
        stop = threading.Event()
        # No second-signal stop here: cut mid-submission, a batch could be created at the API
        # and never recorded, billed with nobody to collect it.
        with _stop_on_signals(
            stop.set, said=lambda: BATCH_STOPPING, write=self._say_now, stop_now=False
        ):
            try:
                progress, run = execute_batch_job(
                    client,
                    build_embedding_cache(config),
                    config,
                    options=options,
                    wait=opts["wait"],
                    trigger="command",
                    stop=stop,
                    on_progress=reporter.update,
                )
            except DatabaseError as err:
                raise _database_error(
                    err, "What was submitted is recorded; run again to go on."
                ) from None
            finally:
                reporter.close()
        if not quiet:
            for line in batch_lines(run):
                self.stdout.write(line)
        self._summary(progress, config, run.pk, opts, index_mode=WriteMode.LIVE, batch=True)
        if progress.exit_code:
            raise CommandError(self._failure_message(progress), returncode=progress.exit_code)

    def _enqueue(self, selection: Selection, opts: dict) -> None:
        # Tasks run apart on many workers: no one of them can hold a total, print a dry run,
        # or keep the index dropped while the others write.
        _refuse_combined("--enqueue", opts, ("dry_run", "limit", "rebuild_index"))
        if opts["chunk"] < 1:
            raise CommandError("--chunk must be at least 1", returncode=2)
        group, tasks = enqueue_backfill(selection, chunk=opts["chunk"], batch_size=opts["batch"])
        if opts["json"]:
            self.stdout.write(json.dumps({"group": group, "tasks": tasks}))
            return
        self.stdout.write(f"Enqueued {tasks} tasks in django-q2 group {group}")
        if tasks:
            self.stdout.write(
                "Run `manage.py qcluster` on one or more machines to work through them; each task "
                "is recorded as a BackfillRun (trigger 'task')."
            )

    def _summary(
        self,
        progress: BackfillProgress,
        config: EmbeddingSettings,
        run_id,
        opts,
        *,
        index_mode: str,
        batch: bool = False,
    ) -> None:
        cost = cost_usd(progress.stats.tokens, config, batch=batch)
        if opts["json"]:
            data = {
                "run_id": run_id,
                "dry_run": opts["dry_run"],
                "total": progress.total,
                "processed": progress.processed,
                "skipped": progress.skipped,
                "failed": progress.failed,
                "duration_seconds": round(progress.duration, 3),
                "interrupted": progress.interrupted,
                "error": str(progress.fatal) if progress.fatal else None,
                "cost_usd": float(cost) if cost is not None else None,
                "failure_reasons": dict(progress.reasons),
                "index_mode": index_mode,
                "index_build_seconds": (
                    None
                    if progress.index_build_seconds is None
                    else round(progress.index_build_seconds, 3)
                ),
                "held_by_other_runs": progress.held_elsewhere,
                **progress.stats.as_dict(),
            }
            self.stdout.write(json.dumps(data, indent=2))
            return
        if opts["verbosity"] == 0:
            return
        for line in summary_lines(progress, cost, dry_run=opts["dry_run"]):
            self.stdout.write(line)

    def _failure_message(self, progress: BackfillProgress) -> str:
        if progress.fatal is not None:
            return str(progress.fatal)
        if progress.interrupted:
            return "interrupted: the batches in flight were finished; run again to continue"
        return f"{progress.failed} clips failed; they are recorded and the next run retries them"

    def _estimate(self, options: BackfillOptions, config: EmbeddingSettings, as_json: bool) -> None:
        queryset = options.selection.queryset()
        site = site_vectors(config)
        if site is not None and not options.selection.force:
            # The site's own vectors of this model are to be kept, but for the sample.
            queryset = queryset.exclude(site_vector_q(config.model))
        found = estimate(queryset, config, limit=options.limit)
        if config.provider == "local":
            self._estimate_local(queryset, found, config, as_json=as_json)
            return
        cost = found.cost_usd
        if as_json:
            data = {
                "clips": found.clips,
                "estimated_tokens": found.tokens,
                "requests": found.requests,
                "cost_usd": _money(cost),
                "minutes_at_limits": found.minutes_at_limits,
                "batch_api": {
                    "cost_usd": _money(found.batch_cost_usd),
                    "batches": found.batches,
                    "fits_queue": found.fits_batch_queue,
                    "queue_tokens": config.batch_queue_tokens,
                },
                "site_vectors": None
                if site is None
                else {
                    "kept": site.labelled - site.sample,
                    "checked": site.sample,
                    "replaced": site.replaced,
                },
            }
            self.stdout.write(json.dumps(data, indent=2))
            return
        if site is not None:
            self.stdout.write(
                f"The site's own vectors: {site.labelled - site.sample} of {config.model} kept"
                f" if a check of {site.sample} agrees (else replaced, {site.labelled} in all),"
                f" {site.replaced} of other models or unlabelled replaced"
            )
        self.stdout.write(f"Clips to embed: {found.clips}")
        requests = f"{found.requests} request{'' if found.requests == 1 else 's'}"
        self.stdout.write(f"Estimated tokens: {found.tokens} in at least {requests}")
        price = f"${cost:.4f} at list price" if cost is not None else "unknown price for model"
        self.stdout.write(f"Estimated cost: {price} ({config.model})")
        self.stdout.write(
            f"Estimated time at the configured limits: "
            f"{format_duration(found.minutes_at_limits * 60)} "
            f"({config.requests_per_minute} requests/min, {config.tokens_per_minute} tokens/min)"
        )
        batch_price = found.batch_cost_usd
        fits = (
            "fits the queue at once"
            if found.fits_batch_queue
            else "more than the queue holds: later batches go as earlier ones finish"
        )
        self.stdout.write(
            "With --batch-api: "
            + (f"${batch_price:.4f}" if batch_price is not None else "unknown price")
            + f" (half price) in {found.batches} batches, within 24 h; {found.tokens} tokens "
            f"{fits} (EMBEDDING_BATCH_QUEUE_TOKENS={config.batch_queue_tokens})"
        )

    def _estimate_local(self, queryset, found, config: EmbeddingSettings, as_json: bool) -> None:
        """The local model: no price, no Batch API (it refuses it), and the time from this
        machine's measured pace on a sample of the texts, not from API rate limits."""
        measured = measure_local_rate(queryset, config) if found.clips else None
        seconds = measured.seconds_for(found.clips) if measured else 0.0
        if as_json:
            data = {
                "clips": found.clips,
                "estimated_tokens": found.tokens,
                "requests": found.requests,
                "cost_usd": 0.0,
                "seconds_measured": round(seconds, 1),
                "measured": None
                if measured is None
                else {
                    "sample_clips": measured.clips,
                    "sample_seconds": round(measured.seconds, 3),
                    "clips_per_second": round(measured.clips_per_second, 1),
                },
                "minutes_at_limits": None,
                "batch_api": None,
            }
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(f"Clips to embed: {found.clips}")
        self.stdout.write(f"Estimated tokens: {found.tokens}")
        self.stdout.write(f"Estimated cost: none: the local model {config.model} runs here")
        if measured is None:
            self.stdout.write("Estimated time: nothing to embed")
        else:
            self.stdout.write(
                f"Estimated time: {format_duration(seconds)}, measured: the local model embedded "
                f"{measured.clips} of these clips in {format_duration(measured.seconds)} "
                f"({measured.clips_per_second:.0f} clips/s on this machine)"
            )
        self.stdout.write("The Batch API (--batch-api) is not offered by the local provider.")


def _database_error(err: DatabaseError, what_now: str) -> CommandError:
    """A lost database connection as the command's exit 1, saying what is safe."""
    return CommandError(f"database error: {err}. {what_now}", returncode=1)
