"""`manage.py search_clips "query text" [-k 10] [--json] [--mode hybrid|vector|text]`: the best
live clips for a text.

A thin door into `embeddings.search`: `hybrid` (the default) fuses full-text matches with the
nearest vectors, `vector` is nearest by cosine distance alone, `text` matches words only and
needs no embedding. Hybrid results are printed with the fused score they are ordered by. The
query is embedded through the cached, rate-limited service, so asking the same question twice
costs one API call.
"""

import json

from django.core.management.base import CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from embeddings.backfill.preflight import check_endpoint, preflight
from embeddings.management.base import EmbeddingCommand
from embeddings.models import Clip, served_settings
from embeddings.search.checks import MAX_K, check_k
from embeddings.search.hybrid import MODES
from embeddings.search.vector import SearchCoverage, search_coverage
from embeddings.service.factory import build_embedding_service

COLUMNS = ("rank", "distance", "title", "broadcaster", "game")
# Hybrid results are ordered by their fused score, highest first: it is printed beside rank.
HYBRID_COLUMNS = ("rank", "score", "distance", "title", "broadcaster", "game")
NOTHING_FOUND = {
    "vector": "No clips found: none has a current embedding.",
    "hybrid": "No clips found: none matches the words and none has a current embedding.",
    "text": "No clips found: none matches the words.",
}


class Command(EmbeddingCommand):
    help = (
        "Find the best live clips for a text: by its words and meaning fused (hybrid, the "
        "default), by cosine distance (vector) or by its words alone (text)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", help="what to look for, in words")
        parser.add_argument("-k", type=int, default=10, help=f"how many clips (10, 1-{MAX_K})")
        parser.add_argument(
            "--ef-search",
            type=int,
            help="HNSW candidates per query (EMBEDDING_SEARCH_EF): higher is slower, more exact",
        )
        parser.add_argument("--json", action="store_true", help="print the clips as JSON")
        parser.add_argument(
            "--mode",
            choices=MODES,
            default="hybrid",
            help="hybrid (words and vectors, the default), vector or text",
        )

    def handle(self, *args, **opts) -> None:
        k = opts["k"]
        check_k(k, name="-k")  # InvalidSearch: exit 2, as every configuration error
        mode = opts["mode"]
        if mode == "text":  # no vector involved: no key, no column size to check
            coverage, clips = None, Clip.objects.similar_to(opts["query"], k, mode=mode)
        else:
            config = served_settings()
            preflight(config)
            check_endpoint(config)
            service = build_embedding_service(config, concurrency=1)
            try:
                coverage = search_coverage(Clip.objects.all(), config)
                clips = Clip.objects.similar_to(
                    opts["query"], k, mode=mode, ef_search=opts["ef_search"], service=service
                )
            finally:
                service.close()

        if coverage is not None and coverage.low:
            self.stderr.write(self.style.WARNING(_coverage_warning(coverage)))
        if opts["json"]:
            rows = [_as_dict(rank, c) for rank, c in enumerate(clips, 1)]
            self.stdout.write(json.dumps(rows, cls=DjangoJSONEncoder))  # a uuid key as text
            return
        if not clips:
            self.stdout.write(NOTHING_FOUND[mode])
            return
        for line in _table(clips, hybrid=mode == "hybrid"):
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
        "distance": None if clip.distance is None else round(float(clip.distance), 6),
        **({"score": round(float(clip.score), 6)} if _score(clip) is not None else {}),
        "title": clip.title,
        "broadcaster_name": clip.broadcaster_name,
        "game_name": clip.game_name,
        "creator_name": clip.creator_name,
        "twitch_clip_id": clip.twitch_clip_id,
        "created_at": clip.created_at.isoformat(),
    }


def _score(clip: Clip) -> float | None:
    """The fused score a hybrid search ordered the clip by (None in the other modes)."""
    return getattr(clip, "score", None)


def _table(clips: list[Clip], *, hybrid: bool = False) -> list[str]:
    """The clips as aligned columns; in hybrid mode the score they are ordered by comes first,
    the cosine distance (or "-": found by its words alone) after it."""
    columns = HYBRID_COLUMNS if hybrid else COLUMNS
    rows = [columns] + [
        (
            str(rank),
            *(["-" if _score(clip) is None else f"{_score(clip):.6f}"] if hybrid else []),
            "-" if clip.distance is None else f"{clip.distance:.4f}",
            clip.title,
            clip.broadcaster_name,
            clip.game_name or "-",
        )
        for rank, clip in enumerate(clips, 1)
    ]
    numbers = len(columns) - 3  # rank, the score, the distance: right-aligned
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i < numbers else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
