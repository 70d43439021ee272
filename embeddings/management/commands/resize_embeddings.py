"""`manage.py resize_embeddings`: make `clips.embedding` hold EMBEDDING_DIMENSIONS-sized vectors.

For a change of model or size (e.g. to the local 384-dimensional model): the old vectors
cannot be converted, so they are cleared, and the HNSW index is rebuilt for the new column.
"""

from django.core.management.base import CommandError, CommandParser
from django.db import connection, transaction

from embeddings.app_settings import MAX_DIMENSIONS, embedding_settings
from embeddings.backfill import sql
from embeddings.backfill.index import HNSW_MAX_DIMENSIONS, build_hnsw_index, drop_hnsw_index
from embeddings.backfill.preflight import vector_column_dimensions
from embeddings.management.base import EmbeddingCommand


class Command(EmbeddingCommand):
    help = "Resize clips.embedding to EMBEDDING_DIMENSIONS, clearing old vectors."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dimensions", type=int, help="the new size (EMBEDDING_DIMENSIONS)")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="do not ask before clearing the stored vectors",
        )

    def handle(self, *args, **opts) -> None:
        dimensions = opts["dimensions"] or embedding_settings().dimensions
        if not 1 <= dimensions <= MAX_DIMENSIONS:
            raise CommandError(f"--dimensions must be between 1 and {MAX_DIMENSIONS}", returncode=2)
        current = vector_column_dimensions()
        if current == dimensions:
            self.stdout.write(f"clips.embedding already holds {dimensions}-dimensional vectors.")
            return
        if opts["interactive"]:
            answer = input(
                f"Clear every stored vector and resize {current} -> {dimensions}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("nothing changed", returncode=1)
        with transaction.atomic():
            drop_hnsw_index()
            with connection.cursor() as cursor:
                cursor.execute(sql.resize_vector_column(dimensions))
                cursor.execute(sql.CLEAR_PROVENANCE)
        if dimensions <= HNSW_MAX_DIMENSIONS:
            build_hnsw_index()
            index = "HNSW index rebuilt"
        else:
            index = f"no HNSW index (pgvector indexes up to {HNSW_MAX_DIMENSIONS} dimensions)"
        self.stdout.write(
            f"clips.embedding now holds {dimensions}-dimensional vectors; old vectors cleared, "
            f"{index}. Run backfill_embeddings to embed every clip again."
        )
