"""`manage.py switch_embeddings --model M --dimensions D [--storage vector|halfvec]`: serve
another version of the vectors without a moment of search answering from a partial one.

A thin door into `embeddings.backfill.switch`; `--status` tells where the versions stand.
"""

import json

from django.core.management.base import CommandError, CommandParser

from embeddings.app_settings import (
    MAX_CONCURRENCY,
    MAX_INPUTS_PER_REQUEST,
    STORAGES,
    embedding_settings,
    storage_problems,
)
from embeddings.backfill.preflight import check_endpoint, preflight
from embeddings.backfill.progress_report import ProgressReporter, format_duration
from embeddings.backfill.switch import Switch, SwitchOptions, begin_switch, version_status
from embeddings.management.base import EmbeddingCommand
from embeddings.models import served_settings


class Command(EmbeddingCommand):
    help = "Build another version of the vectors beside the served one, then serve it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="the model to switch to")
        parser.add_argument("--dimensions", type=int, help="the vector size to switch to")
        parser.add_argument(
            "--storage", choices=STORAGES, help="vector (default) or halfvec (half precision)"
        )
        parser.add_argument("--status", action="store_true", help="where the versions stand")
        parser.add_argument("--batch", type=int, default=50, help="clips per batch (50)")
        parser.add_argument(
            "--concurrency",
            type=int,
            help=f"requests in flight, 1-{MAX_CONCURRENCY} (default: EMBEDDING_CONCURRENCY)",
        )
        parser.add_argument("--json", action="store_true", help="print the status as JSON")

    def announces_unserved_settings(self, options: dict) -> bool:
        # A switch serves what its flags say; --status tells where the settings stand.
        return bool(options.get("status"))

    def handle(self, *args, **opts) -> None:
        if opts["status"]:
            self._status(opts["json"])
            return
        config = served_settings()
        preflight(config)
        model = config.model if opts["model"] is None else opts["model"]
        dimensions = config.dimensions if opts["dimensions"] is None else opts["dimensions"]
        storage = opts["storage"] or config.storage
        if opts["model"] is None and opts["dimensions"] is None and opts["storage"] is None:
            raise CommandError("say what to switch to: --model, --dimensions, --storage", 2)
        if not model.strip():
            raise CommandError("--model must name a model", returncode=2)
        if dimensions < 1:
            raise CommandError(f"--dimensions must be at least 1, not {dimensions}", returncode=2)
        for problem in storage_problems(storage, dimensions):
            raise CommandError(problem, returncode=2)
        if not 1 <= opts["batch"] <= MAX_INPUTS_PER_REQUEST:
            raise CommandError(
                f"--batch must be between 1 and {MAX_INPUTS_PER_REQUEST}, not {opts['batch']}",
                returncode=2,
            )
        concurrency = opts["concurrency"]
        if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CommandError(
                f"--concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency} "
                "(leave it out for EMBEDDING_CONCURRENCY)",
                returncode=2,
            )
        check_endpoint(config)
        version = begin_switch(model, dimensions, storage)
        if version is None:
            self.stdout.write(f"{model} at {dimensions} ({storage}) is served already.")
            return
        self.stdout.write(f"Switching to {version.model} at {version.dimensions} ({storage})")
        reporter = ProgressReporter(self.stdout, enabled=opts["verbosity"] > 0)
        options = SwitchOptions(
            batch_size=opts["batch"],
            concurrency=concurrency,
            on_step=lambda phase: self.stdout.write(f"Step: {phase}"),
            on_progress=reporter.update,
        )
        try:
            result = Switch(version, options).run()
        finally:
            reporter.close()
        progress = result.progress
        for step, seconds in result.steps:
            self.stdout.write(f"  {step}: {format_duration(seconds)}")
        self.stdout.write(
            f"Served: {version.model} at {version.dimensions} ({version.storage}); "
            f"embedded {progress.processed}, cache hits {progress.stats.cache_hits}, "
            f"API requests {progress.stats.requests}"
        )

    def _status(self, as_json: bool) -> None:
        status = version_status()
        if as_json:
            self.stdout.write(json.dumps(status, indent=2, default=str))
            return
        for row in status["versions"]:
            built = f", {row['built']} of {status['live']} live clips built" if row["built"] else ""
            self.stdout.write(
                f"{row['state']:>8}  {row['model']} at {row['dimensions']} ({row['storage']}), "
                f"phase {row['phase']}{built}"
            )
        if not status["versions"]:
            self.stdout.write(f"no version yet (settings: {embedding_settings()!r})")
