"""`manage.py backfill_embeddings`: embed every live clip that lacks a current vector.

A thin door into `embeddings.backfill.runs.execute_backfill`; the old Go tool's flags
(`-batch 100 -force -dry-run`) keep working beside the `--long` spellings.
"""

import json
import signal
import threading
from datetime import datetime, time, timedelta

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from embeddings.app_settings import MAX_CONCURRENCY, EmbeddingSettings
from embeddings.backfill.estimate import estimate
from embeddings.backfill.pipeline import Backfill, BackfillOptions, BackfillProgress
from embeddings.backfill.preflight import preflight
from embeddings.backfill.progress_report import ProgressReporter, format_duration, summary_lines
from embeddings.backfill.runs import cost_usd, execute_backfill
from embeddings.backfill.selection import Selection
from embeddings.management.base import EmbeddingCommand
from embeddings.models import served_settings
from embeddings.service.factory import build_embedding_service
from embeddings.tasks import enqueue_backfill

MAX_BATCH = 2048


def _created_after(value: str) -> datetime:
    """ISO date/datetime, or a relative age like `7d` / `12h`."""
    if value[:-1].isdigit() and value[-1] in "dh":
        amount = int(value[:-1])
        return timezone.now() - (
            timedelta(days=amount) if value[-1] == "d" else timedelta(hours=amount)
        )
    parsed = parse_datetime(value)
    if parsed is None and (day := parse_date(value)) is not None:
        parsed = datetime.combine(day, time.min)
    if parsed is None:
        raise ValueError(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(EmbeddingCommand):
    help = "Embed live clips that have no current embedding (all live clips with --force)."

    def add_arguments(self, parser: CommandParser) -> None:
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
            type=_created_after,
            metavar="DATE|7d|12h",
            help="only clips created at or after this date (or this long ago)",
        )
        parser.add_argument(
            "--concurrency", type=int, help="requests in flight (EMBEDDING_CONCURRENCY)"
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

    def handle(self, *args, **opts) -> None:
        config = served_settings()
        batch = opts["batch"]
        if not 1 <= batch <= MAX_BATCH:
            raise CommandError(f"--batch must be between 1 and {MAX_BATCH}", returncode=2)
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1", returncode=2)
        concurrency = opts["concurrency"] or config.concurrency
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CommandError(
                f"--concurrency must be between 1 and {MAX_CONCURRENCY}", returncode=2
            )
        if not config.enabled:
            self.stderr.write(self.style.WARNING("EMBEDDING_ENABLED is false; running anyway."))
        preflight(config)

        selection = Selection.of(
            config,
            force=opts["force"],
            created_after=opts["created_after"],
        )
        options = BackfillOptions(
            selection=selection, batch_size=batch, limit=opts["limit"], dry_run=opts["dry_run"]
        )
        if opts["estimate"]:
            self._estimate(options, config, as_json=opts["json"])
            return
        if opts["enqueue"]:
            self._enqueue(selection, opts)
            return

        service = build_embedding_service(config, concurrency=concurrency)
        quiet = opts["json"] or opts["verbosity"] == 0
        if not quiet:
            self.stdout.write("Starting embedding backfill")
            self.stdout.write(
                f"Configuration: batch={batch} force={str(opts['force']).lower()} "
                f"dry-run={str(opts['dry_run']).lower()} model={config.model} "
                f"dimensions={config.dimensions} concurrency={service.concurrency} "
                f"index={'rebuild' if opts['rebuild_index'] else 'live'}"
            )
            self.stdout.write(
                f"Provider: {service.provider.describe()}; rate limiter: "
                f"{service.limiter.describe()}; cache: {service.cache_description()}"
            )
        reporter = ProgressReporter(self.stdout, enabled=not quiet)

        previous_handlers: dict[int, object] = {}

        def on_start(backfill: Backfill) -> None:
            # SIGINT/SIGTERM finish the batches in flight; only the main thread may set them.
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    previous_handlers[signum] = signal.signal(signum, lambda *_: backfill.stop())
            if not quiet:
                total = backfill.count()
                self.stdout.write(f"Found {total} clips to process")

        try:
            progress, run = execute_backfill(
                service,
                options,
                config,
                trigger="command",
                rebuild_index=opts["rebuild_index"],
                on_start=on_start,
                on_progress=reporter.update,
            )
        except DatabaseError as err:
            raise CommandError(
                f"database error: {err}. Nothing wrong was written; run again to continue.",
                returncode=1,
            ) from None
        finally:
            reporter.close()
            service.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        self._summary(progress, config, run.pk if run else None, opts)
        if progress.exit_code:
            raise CommandError(self._failure_message(progress), returncode=progress.exit_code)

    def _enqueue(self, selection: Selection, opts: dict) -> None:
        if opts["dry_run"] or opts["limit"] is not None:
            raise CommandError(
                "--enqueue cannot be combined with --dry-run or --limit", returncode=2
            )
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

    def _summary(self, progress: BackfillProgress, config: EmbeddingSettings, run_id, opts) -> None:
        cost = cost_usd(progress.stats.tokens, config)
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
        found = estimate(options.selection.queryset(), config, limit=options.limit)
        cost = found.cost_usd
        if as_json:
            data = {
                "clips": found.clips,
                "estimated_tokens": found.tokens,
                "requests": found.requests,
                "cost_usd": float(cost) if cost is not None else None,
                "minutes_at_limits": found.minutes_at_limits,
            }
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(f"Clips to embed: {found.clips}")
        self.stdout.write(f"Estimated tokens: {found.tokens} in at least {found.requests} requests")
        price = f"${cost:.4f} at list price" if cost is not None else "unknown price for model"
        self.stdout.write(f"Estimated cost: {price} ({config.model})")
        self.stdout.write(
            f"Estimated time at the configured limits: "
            f"{format_duration(found.minutes_at_limits * 60)} "
            f"({config.requests_per_minute} requests/min, {config.tokens_per_minute} tokens/min)"
        )
