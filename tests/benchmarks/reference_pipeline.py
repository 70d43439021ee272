"""The simplest fast backfill one could write, as the yardstick for `backfill_embeddings`.

What it does, and nothing more: one server-side cursor streams (id, text) of clips without a
vector; every 2,048 rows become one request through the real `openai` client (base64); up to
`concurrency` requests are in flight on a thread pool while the main thread keeps reading and
writes finished batches in order, each with a binary COPY into a temp table and one
UPDATE ... FROM (pgvector's psycopg adapters). No cache, claims, retries or run records.

    python -m tests.benchmarks.reference_pipeline --database-url URL --base-url URL \
        --model M --dimensions 768 --concurrency 4     # prints a JSON summary
"""

import argparse
import base64
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import openai
import psycopg
from pgvector.psycopg import register_vector

BATCH = 2048

# The text the project embeds (embeddings/clip_text.py), written out in plain SQL.
SELECT_PENDING = """
    SELECT id, concat_ws('. ',
        CASE WHEN length(trim(title)) > 0 THEN 'Title: ' || trim(title) END,
        CASE WHEN length(trim(broadcaster_name)) > 0
            THEN 'Broadcaster: ' || trim(broadcaster_name) END,
        CASE WHEN length(trim(creator_name)) > 0
                AND trim(creator_name) <> trim(broadcaster_name)
            THEN 'Clipped by: ' || trim(creator_name) END,
        CASE WHEN length(trim(game_name)) > 0 THEN 'Game: ' || trim(game_name) END)
    FROM clips
    WHERE NOT is_removed AND embedding IS NULL
    ORDER BY id
"""

UPDATE_FROM_TEMP = """
    UPDATE clips SET
        embedding = w.embedding,
        embedding_model = %s,
        embedding_dimensions = %s,
        embedding_text_hash = clips.text_hash,
        embedding_generated_at = now()
    FROM reference_writes w
    WHERE clips.id = w.id
"""


@dataclass(frozen=True)
class ReferenceResult:
    clips: int
    requests: int
    seconds: float


def embed(client: openai.OpenAI, model: str, dimensions: int, texts: list[str]) -> np.ndarray:
    """One request; rows of the result follow `texts` (mapped by each item's `index`)."""
    response = client.embeddings.create(
        input=texts, model=model, dimensions=dimensions, encoding_format="base64"
    )
    vectors = np.empty((len(texts), dimensions), dtype=np.float32)
    for item in response.data:
        vectors[item.index] = np.frombuffer(base64.b64decode(item.embedding), dtype="<f4")
    return vectors


def write(conn: psycopg.Connection, ids: list[int], vectors: np.ndarray, model: str) -> None:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY reference_writes (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "vector"])
            for row in zip(ids, vectors, strict=True):
                copy.write_row(row)
        cur.execute(UPDATE_FROM_TEMP, (model, vectors.shape[1]))


def run_reference(
    *, database_url: str, base_url: str, model: str, dimensions: int, concurrency: int
) -> ReferenceResult:
    started = time.perf_counter()
    client = openai.OpenAI(api_key="bench-not-a-key", base_url=base_url, max_retries=0)
    clips = requests = 0
    with (
        psycopg.connect(database_url) as reader,
        psycopg.connect(database_url) as writer,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        register_vector(writer)
        writer.execute(
            "CREATE TEMP TABLE reference_writes (id bigint, embedding vector) ON COMMIT DELETE ROWS"
        )
        writer.commit()
        in_flight: deque[tuple[list[int], Future[np.ndarray]]] = deque()

        def write_oldest() -> None:
            ids, future = in_flight.popleft()
            write(writer, ids, future.result(), model)

        with reader.cursor(name="pending") as cursor:
            cursor.itersize = BATCH
            cursor.execute(SELECT_PENDING)
            while rows := cursor.fetchmany(BATCH):
                ids = [row[0] for row in rows]
                texts = [row[1] for row in rows]
                in_flight.append((ids, pool.submit(embed, client, model, dimensions, texts)))
                clips += len(rows)
                requests += 1
                if len(in_flight) >= concurrency:
                    write_oldest()
        while in_flight:
            write_oldest()
    return ReferenceResult(clips=clips, requests=requests, seconds=time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dimensions", type=int, default=768)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    result = run_reference(
        database_url=args.database_url,
        base_url=args.base_url,
        model=args.model,
        dimensions=args.dimensions,
        concurrency=args.concurrency,
    )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
