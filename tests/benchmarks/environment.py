"""What the benchmarks run against: a database of their own, the test server, Redis keys.

Nothing here touches the developer's data: the database is a separate one (`bench_clips`) on
the same server, and Redis keys are deleted by the run's own marker, never by FLUSHDB.
"""

import json
import os
import platform
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from tests.benchmarks.measure import manage_py, run_measured
from tests.support.openai_server import start_subprocess

BENCH_DATABASE = "bench_clips"
HNSW_INDEX = "clips_embedding_hnsw"


def server_url() -> str:
    """DATABASE_URL if set, else the embedded server's URL (started if it is not running)."""
    from project import settings
    from project.embedded_postgres import embedded_database_url

    return settings.DATABASE_URL or embedded_database_url(settings.EMBEDDED_PGDATA)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(frozen=True)
class LoadedClips:
    loaded: int
    live: int
    loader_seconds: float


class BenchDatabase:
    """A throwaway database next to the developer's, recreated for every measured run."""

    def __init__(self, admin_url: str, name: str = BENCH_DATABASE) -> None:
        if urlsplit(admin_url).path.strip("/") == name:
            raise RuntimeError(f"DATABASE_URL names {name!r}, the database benchmarks drop")
        self.admin_url = admin_url
        self.name = name
        self.url = with_database(admin_url, name)

    def recreate(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def execute(self, *statements: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def scalar(self, query: str, params: Sequence[object] | None = None) -> object:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(query, params).fetchone()
        return row[0] if row else None

    def prepare(
        self, clips: int, *, hnsw_index: bool, env: Mapping[str, str] | None = None
    ) -> LoadedClips:
        """Fresh database, migrated, `clips` demo clips without vectors, settled on disk;
        `env`: more settings for migrate and the loader (EMBEDDING_DIMENSIONS)."""
        self.recreate()
        env = {**(env or {}), "DATABASE_URL": self.url}
        run_measured(manage_py("migrate", "--noinput", "-v", "0"), env=env).check("migrate")
        load = run_measured(manage_py("load_demo_clips", "--count", str(clips)), env=env)
        load.check("load_demo_clips")
        if not hnsw_index:
            self.execute(f"DROP INDEX {HNSW_INDEX}")
        # Same start for every run: statistics known, no dirty pages left from loading.
        self.execute("VACUUM ANALYZE clips", "CHECKPOINT")
        live = int(self.scalar("SELECT count(*) FROM clips WHERE NOT is_removed") or 0)
        return LoadedClips(loaded=clips, live=live, loader_seconds=_loader_seconds(load.stdout))

    def hnsw_index_exists(self) -> bool:
        return bool(self.scalar(f"SELECT to_regclass('{HNSW_INDEX}') IS NOT NULL"))

    def embedded_live_clips(self) -> int:
        return int(
            self.scalar("SELECT count(*) FROM clips WHERE NOT is_removed AND embedding IS NOT NULL")
            or 0
        )


def _loader_seconds(output: str) -> float:
    """The load time `load_demo_clips` reports ("... in 1.23s")."""
    return float(output.rsplit(" in ", 1)[1].strip().rstrip("s"))


class OpenAITestServer:
    """`tests.support.openai_server` in a subprocess: it never shares a GIL with what it serves."""

    def __init__(self, process: subprocess.Popen, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.root = base_url.removesuffix("/v1")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.root}/_control/stats", timeout=10) as response:
            return json.load(response)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.root}/_control/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextmanager
def openai_test_server(latency_ms: int, *faults: str) -> Iterator[OpenAITestServer]:
    """The test server in a subprocess; `faults` are its command-line fault options."""
    process, base_url = start_subprocess("--latency-ms", str(latency_ms), *faults)
    try:
        yield OpenAITestServer(process, base_url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_redis_keys(redis_url: str, marker: str) -> int:
    """Delete the keys whose name contains `marker` (this run's cache entries); never FLUSHDB."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{marker}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    client.close()
    return deleted


def machine_lines(database: BenchDatabase, redis_url: str) -> list[str]:
    """Cores, memory and versions, printed above the results."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
        pgvector = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    client = redis.Redis.from_url(redis_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    packages = ("Django", "openai", "psycopg", "pgvector", "numpy", "redis")
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    return [
        f"Machine: {os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.platform()}",
        f"Python {platform.python_version()}; {versions}",
        f"PostgreSQL {postgres}, pgvector {pgvector[0] if pgvector else 'missing'}; "
        f"Redis {redis_version}",
    ]


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return kib / 2**20
