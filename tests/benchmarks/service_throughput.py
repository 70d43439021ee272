"""Texts/s of `EmbeddingService` alone (issue 3); run by `run.py` as a subprocess.

The service is the one the command builds (`build_embedding_service`: Redis cache, shared
limiter, OpenAI client), configured by the environment `run.py` passes: a model name of its
own, so the cache starts cold, and limits far above what the test server can serve.

    python -m tests.benchmarks.service_throughput --texts 20000     # prints a JSON summary

With EMBEDDING_PROVIDER=local in the environment it measures the local model (issue 9).
"""

import argparse
import json
import os
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument(
        "--no-cache", action="store_true", help="measure the provider, not what is cached"
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from embeddings.app_settings import embedding_settings
    from embeddings.service.factory import build_embedding_service

    texts = distinct_texts(args.texts)
    service = build_embedding_service(embedding_settings())
    try:
        started = time.perf_counter()
        result = service.embed(texts, use_cache=not args.no_cache)
        seconds = time.perf_counter() - started
    finally:
        service.close()
    embedded = sum(vector is not None for vector in result.vectors)
    summary = {"texts": len(texts), "embedded": embedded, "seconds": seconds}
    print(json.dumps(summary | result.stats.as_dict()))


if __name__ == "__main__":
    main()
