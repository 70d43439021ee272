"""`manage.py search_clips "query text" [-k 10] [--json]`: the nearest live clips to a text.

A thin door into `embeddings.search.vector`; the query is embedded through the cached, rate-limited
service, so asking the same question twice costs one API call.
"""

import json

from django.core.management.base import CommandError, CommandParser

from embeddings.app_settings import embedding_settings
from embeddings.backfill.preflight import preflight
from embeddings.management.base import EmbeddingCommand
from embeddings.models import Clip
from embeddings.search.vector import MAX_K, SearchCoverage, search_coverage
from embeddings.service.factory import build_embedding_service

COLUMNS = ("rank", "distance", "title", "broadcaster", "game")


class Command(EmbeddingCommand):
    help = "Find the live clips nearest in meaning to a text (cosine distance, nearest first)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", help="what to look for, in words")
        parser.add_argument("-k", type=int, default=10, help=f"how many clips (10, 1-{MAX_K})")
        parser.add_argument(
            "--ef-search",
            type=int,
            help="HNSW candidates per query (EMBEDDING_SEARCH_EF): higher is slower, more exact",
        )
        parser.add_argument("--json", action="store_true", help="print the clips as JSON")

    def handle(self, *args, **opts) -> None:
        k = opts["k"]
        if not 1 <= k <= MAX_K:
            raise CommandError(f"-k must be between 1 and {MAX_K}", returncode=2)
        config = embedding_settings()
        preflight(config)
        service = build_embedding_service(config, concurrency=1)
        try:
            coverage = search_coverage(Clip.objects.all(), config)
            clips = Clip.objects.similar_to(
                opts["query"], k, ef_search=opts["ef_search"], service=service
            )
        finally:
            service.close()

        if coverage.low:
            self.stderr.write(self.style.WARNING(_coverage_warning(coverage)))
        if opts["json"]:
            self.stdout.write(json.dumps([_as_dict(rank, c) for rank, c in enumerate(clips, 1)]))
            return
        if not clips:
            self.stdout.write("No clips found: none has a current embedding.")
            return
        for line in _table(clips):
            self.stdout.write(line)


def _coverage_warning(coverage: SearchCoverage) -> str:
    return (
        f"Only {coverage.searchable} of {coverage.live} live clips "
        f"({coverage.fraction:.0%}) have a current embedding and can be found: "
        "run `manage.py backfill_embeddings` to embed the rest."
    )


def _as_dict(rank: int, clip: Clip) -> dict:
    return {
        "rank": rank,
        "id": clip.pk,
        "distance": round(float(clip.distance), 6),
        "title": clip.title,
        "broadcaster_name": clip.broadcaster_name,
        "game_name": clip.game_name,
        "creator_name": clip.creator_name,
        "twitch_clip_id": clip.twitch_clip_id,
        "created_at": clip.created_at.isoformat(),
    }


def _table(clips: list[Clip]) -> list[str]:
    rows = [COLUMNS] + [
        (
            str(rank),
            f"{clip.distance:.4f}",
            clip.title,
            clip.broadcaster_name,
            clip.game_name or "-",
        )
        for rank, clip in enumerate(clips, 1)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i < 2 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
