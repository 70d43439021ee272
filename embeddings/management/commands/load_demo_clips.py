"""`manage.py load_demo_clips`: fill `clips` with realistic demo data for search and backfills."""

from django.core.management.base import CommandError, CommandParser
from django.db import connection

from embeddings.demo.loader import load_demo_clips
from embeddings.management.base import EmbeddingCommand
from embeddings.site_table.record import site_table


class Command(EmbeddingCommand):
    help = "Load realistic demo clips (bulk COPY); --replace empties the clips table first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=1000, help="clips to load (default 1000)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument(
            "--replace", action="store_true", help="delete all clips before loading"
        )

    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # no vector is read or written

    def handle(
        self, *args: object, count: int, seed: int, replace: bool, **options: object
    ) -> None:
        if count <= 0:
            raise CommandError(
                f"--count must be a positive number of clips, got {count}", returncode=2
            )
        if site_table(connection) is not None:
            raise CommandError(
                "clips is the site's own table (taken in by migrate): demo clips go only into"
                " a clips table the tool created; point DATABASE_URL at another database",
                returncode=2,
            )
        result = load_demo_clips(count, seed=seed, replace=replace)
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {result.loaded} demo clips ({result.live} live, {result.removed} removed)"
                f" in {result.seconds:.2f}s"
            )
        )
