"""Texts/s of `EmbeddingService` alone; run by `run.py` as a subprocess.

The service is the one the command builds (`build_embedding_service`: Redis cache, shared
limiter, OpenAI client), configured by the environment `run.py` passes: a model name of its
own, so the cache starts cold, and limits far above what the test server can serve.

    python -m tests.benchmarks.service_throughput --texts 20000     # prints a JSON summary

With EMBEDDING_PROVIDER=local in the environment it measures the local model.
`--calls-of N` makes it a backfill's shape instead: calls of N texts from
`EMBEDDING_CONCURRENCY` threads at once; `--twins` puts each text in two consecutive calls, and
`--no-sharing` turns off the sharing of texts between calls in flight, to measure both.
"""

import argparse
import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime


def distinct_texts(count: int) -> list[str]:
    """`count` different clip-like texts (demo titles, numbered so none repeats)."""
    from embeddings.demo.generator import generate_demo_clips

    now = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        f"Title: {clip.title}. Broadcaster: {clip.broadcaster_name}. "
        f"Game: {clip.game_name or 'none'}. Clip {index}"
        for index, clip in enumerate(generate_demo_clips(count, now=now))
    ]


def twin_calls(texts: list[str], size: int) -> list[list[str]]:
    """Calls of `size` texts in which each block of size/2 texts is also in the next call:
    two calls in flight together ask for the same texts."""
    half = size // 2
    blocks = [texts[start : start + half] for start in range(0, len(texts), half)]
    return [blocks[i] + blocks[i + 1] for i in range(len(blocks) - 1)]


class EveryCallSendsAll:
    """In place of `InFlight`: a call owns all its texts, as before texts were shared."""

    borrowed = 0

    def take(self, texts: Iterable[str]) -> tuple[list[str], Future, dict[str, Future]]:
        return list(texts), Future(), {}

    def settle(self, owned, mine: Future, outcome, error=None) -> None:
        mine.set_result(outcome)


def embed_calls(service, calls: list[list[str]], threads: int) -> tuple[int, dict]:
    """Answered texts and summed stats of `calls` made `threads` at a time."""
    from embeddings.service.stats import EmbeddingStats

    stats = EmbeddingStats()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(service.embed, calls))
    for result in results:
        stats.add(result.stats)
    answered = sum(v is not None for result in results for v in result.vectors)
    return answered, stats.as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument(
        "--no-cache", action="store_true", help="measure the provider, not what is cached"
    )
    parser.add_argument("--calls-of", type=int, help="texts per call, calls made concurrently")
    parser.add_argument("--twins", action="store_true", help="each text in two calls in flight")
    parser.add_argument("--no-sharing", action="store_true", help="every call sends its texts")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from embeddings.app_settings import embedding_settings
    from embeddings.service.factory import build_embedding_service

    texts = distinct_texts(args.texts // 2 if args.twins else args.texts)
    config = embedding_settings()
    service = build_embedding_service(config)
    if args.no_sharing:
        service.in_flight = EveryCallSendsAll()
    try:
        started = time.perf_counter()
        if args.calls_of:
            calls = (
                twin_calls(texts, args.calls_of)
                if args.twins
                else [
                    texts[start : start + args.calls_of]
                    for start in range(0, len(texts), args.calls_of)
                ]
            )
            embedded, stats = embed_calls(service, calls, config.concurrency)
            asked = sum(len(call) for call in calls)
        else:
            result = service.embed(texts, use_cache=not args.no_cache)
            embedded = sum(vector is not None for vector in result.vectors)
            stats, asked = result.stats.as_dict(), len(texts)
        seconds = time.perf_counter() - started
    finally:
        service.close()
    summary = {"texts": asked, "embedded": embedded, "seconds": seconds}
    print(json.dumps(summary | stats))


if __name__ == "__main__":
    main()
