"""The ideal backfill, as the yardstick for `backfill_embeddings`: what a plain script reaches.

What it does, and nothing more: keyset pages of (id, text) of clips without a vector, read
straight from psycopg; each page of 2,048 is one request, with up to `concurrency` requests
in flight on as many keep-alive HTTP connections (one per worker thread) while the main thread
reads the next pages; base64 answers joined and decoded by numpy in one go; each page written
in order with one binary COPY of float32 rows into a temp table and one UPDATE ... FROM.
No ORM, no openai client, no cache, claims, retries or run records: the floor the command's
extras are measured against. The text is the one the command embeds (embeddings/clip_text.py),
written out in plain SQL; `TEXT_SQL` hashes to `clips.text_hash` (tests/test_reference_pipeline.py).

    python -m tests.benchmarks.reference_pipeline --database-url URL --base-url URL \
        --model M --dimensions 768 --concurrency 4     # prints a JSON summary
"""

import argparse
import base64
import http.client
import json
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import numpy as np
import orjson
import psycopg

BATCH = 2048

# The text the project embeds (embeddings/clip_text.py), written out in plain SQL.
TEXT_SQL = """concat_ws('. ',
    CASE WHEN length(trim(title)) > 0 THEN 'Title: ' || trim(title) END,
    CASE WHEN length(trim(broadcaster_name)) > 0
        THEN 'Broadcaster: ' || trim(broadcaster_name) END,
    CASE WHEN length(trim(creator_name)) > 0 AND trim(creator_name) <> trim(broadcaster_name)
        THEN 'Clipped by: ' || trim(creator_name) END,
    CASE WHEN length(trim(game_name)) > 0 THEN 'Game: ' || trim(game_name) END)"""

# The partial index `clips_unembedded_idx` (id WHERE NOT is_removed AND embedding IS NULL)
# answers each page without a sort.
SELECT_PAGE = f"""
    SELECT id, {TEXT_SQL} FROM clips
    WHERE NOT is_removed AND embedding IS NULL AND id > %s
    ORDER BY id LIMIT {BATCH}
"""

# A temp table has no statistics: without them the UPDATE hash-joins a scan of all of clips
# (measured 400 ms a page at 50,000 clips, against ~40 ms through the primary key).
ANALYZE_TEMP = "ANALYZE reference_writes"
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
# PostgreSQL's binary COPY framing: signature, flags, header extension; the end marker.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class ReferenceResult:
    clips: int
    requests: int
    seconds: float


class Embedder:
    """POSTs to /embeddings, one keep-alive connection per calling thread."""

    def __init__(self, base_url: str, model: str, dimensions: int) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = parts.path.rstrip("/") + "/embeddings"
        self._model, self._dimensions = model, dimensions
        self._local = threading.local()

    def embed(self, texts: list[str]) -> np.ndarray:
        body = orjson.dumps(
            {
                "input": texts,
                "model": self._model,
                "dimensions": self._dimensions,
                "encoding_format": "base64",
            }
        )
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self._host, self._port)
        conn.request(
            "POST",
            self._path,
            body,
            {"Content-Type": "application/json", "Authorization": "Bearer bench-not-a-key"},
        )
        response = conn.getresponse()
        content = response.read()
        if response.status != 200:
            raise RuntimeError(f"embeddings request failed: {response.status} {content[:200]!r}")
        items = sorted(orjson.loads(content)["data"], key=lambda item: item["index"])
        decoded = base64.b64decode("".join(item["embedding"] for item in items))
        return np.frombuffer(decoded, dtype="<f4").reshape(len(texts), self._dimensions)


def copy_rows(ids: list[int], vectors: np.ndarray) -> bytes:
    """Binary COPY rows of (id bigint, embedding vector): per row the field count, each
    field's length and big-endian value (a vector: its size, a reserved int16, the floats)."""
    dimensions = vectors.shape[1]
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_size", ">i4"),
            ("id", ">i8"),
            ("vector_size", ">i4"),
            ("dimensions", ">i2"),
            ("reserved", ">i2"),
            ("vector", ">f4", (dimensions,)),
        ]
    )
    rows = np.zeros(len(ids), dtype=row)
    rows["fields"] = 2
    rows["id_size"] = 8
    rows["id"] = ids
    rows["vector_size"] = 4 + 4 * dimensions
    rows["dimensions"] = dimensions
    rows["vector"] = vectors
    return COPY_HEADER + rows.tobytes() + COPY_TRAILER


def write(conn: psycopg.Connection, ids: list[int], vectors: np.ndarray, model: str) -> None:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY reference_writes (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(copy_rows(ids, vectors))
        cur.execute(ANALYZE_TEMP)
        cur.execute(UPDATE_FROM_TEMP, (model, vectors.shape[1]))


def run_reference(
    *, database_url: str, base_url: str, model: str, dimensions: int, concurrency: int
) -> ReferenceResult:
    started = time.perf_counter()
    embedder = Embedder(base_url, model, dimensions)
    clips = requests = 0
    with (
        psycopg.connect(database_url, autocommit=True) as reader,
        psycopg.connect(database_url) as writer,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        writer.execute(
            "CREATE TEMP TABLE reference_writes (id bigint, embedding vector) ON COMMIT DELETE ROWS"
        )
        writer.commit()
        in_flight: deque[tuple[list[int], Future[np.ndarray]]] = deque()

        def write_oldest() -> None:
            ids, future = in_flight.popleft()
            write(writer, ids, future.result(), model)

        after = -(2**63)
        while rows := reader.execute(SELECT_PAGE, (after,)).fetchall():
            ids = [row[0] for row in rows]
            in_flight.append((ids, pool.submit(embedder.embed, [row[1] for row in rows])))
            after = ids[-1]
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
