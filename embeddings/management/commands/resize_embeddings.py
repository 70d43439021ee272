"""`manage.py resize_embeddings [--dimensions D]`: a switch of size (see `switch_embeddings`).

The served model at the new size is built beside the served vectors, then served: search
keeps answering from the old vectors until the new ones are complete and indexed.
"""

from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser

from embeddings.app_settings import embedding_settings
from embeddings.management.base import EmbeddingCommand
from embeddings.models import adopt_column


class Command(EmbeddingCommand):
    help = "Switch the served vectors to another size (EMBEDDING_DIMENSIONS by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dimensions", type=int, help="the new size (EMBEDDING_DIMENSIONS)")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="kept for old scripts: nothing is cleared, so nothing is asked",
        )

    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # EMBEDDING_DIMENSIONS other than served is what this command serves

    def handle(self, *args, **opts) -> None:
        config = embedding_settings()
        dimensions = config.dimensions if opts["dimensions"] is None else opts["dimensions"]
        if dimensions < 1:
            raise CommandError(f"--dimensions must be at least 1, not {dimensions}", returncode=2)
        served = adopt_column(config.model)
        call_command(
            "switch_embeddings",
            model=served.model,
            dimensions=dimensions,
            storage=served.storage,
            stdout=self.stdout._out,
            stderr=self.stderr._out,
        )
