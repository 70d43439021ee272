"""Searches without pause until its stdin closes, timing every query; run by `switching.py`.

Against DATABASE_URL's clips, already embedded: takes `--texts` live clips whose text no other
live clip has, and asks `Clip.objects.similar_to(text)` for each in turn. A warm-up pass fills
the query cache and the database's pages and prints `warm`; from then on every query is
recorded as (wall clock at its start, seconds, outcome): `ok` when the clip of that text comes
back first (the test server's vectors depend on the text alone, so under any version it is at
distance 0), `miss` when another clip does, `error` when the search raises. On stdin's end it
prints the records as JSON.

The service of the served version is picked before each query, outside the timed part, as a
long-running web process would keep one per version; a query that meets a swap builds its
own (`embeddings.search.vector.embed_query`), and that cost is timed.
"""

import argparse
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter

K = 10
MAX_ERRORS_KEPT = 5


def unique_texts(limit: int) -> list[tuple[int, str]]:
    """(id, text) of up to `limit` live clips whose exact text no other live clip shares (the
    demo repeats some clips), spread over the table."""
    from embeddings.models import Clip

    rows = list(Clip.objects.live().with_text().order_by("pk").values_list("pk", "text"))
    counts = Counter(text for _, text in rows)
    unique = [(pk, text) for pk, text in rows if counts[text] == 1]
    step = max(1, len(unique) // limit)
    return unique[::step][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from embeddings.models import Clip
    from embeddings.service.factory import build_embedding_service

    services = {}

    def service_of_served():
        config = Clip.objects.served_settings()
        key = (config.model, config.dimensions)
        if key not in services:
            services[key] = build_embedding_service(config, concurrency=1)
        return services[key]

    def answer(clip_id: int, text: str, service) -> str:
        clips = Clip.objects.similar_to(text, k=K, service=service)
        return "ok" if clips and clips[0].pk == clip_id else "miss"

    queries = unique_texts(args.texts)
    for clip_id, text in queries:
        answer(clip_id, text, service_of_served())
    print("warm", flush=True)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    records: list[tuple[float, float, str]] = []
    errors: list[str] = []
    try:
        for clip_id, text in itertools.cycle(queries):
            if stop.is_set():
                break
            began_at, began = time.time(), time.perf_counter()
            try:
                service = service_of_served()
                began_at, began = time.time(), time.perf_counter()  # the search alone
                outcome = answer(clip_id, text, service)
            except Exception as err:  # counted and shown: the scenario's target is none
                outcome = "error"
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"{type(err).__name__}: {err}")
            records.append((began_at, time.perf_counter() - began, outcome))
    finally:
        for service in services.values():
            service.close()
    print(json.dumps({"texts": len(queries), "records": records, "errors": errors}))


if __name__ == "__main__":
    main()
