"""Running the tool's commands on a site's own database (tests/support/site_database.py), as a
site's operator runs them: `manage.py` subprocesses with DATABASE_URL set to the site's.

A pytest plugin (tests/conftest.py lists it) for the `site_env` fixture; `manage`, `query` and
`CONTRACT_TEXT` are imported by the tests that use them.
"""

import subprocess
import sys

import numpy as np
import pytest

from tests.support.cluster import ROOT
from tests.support.site_database import SiteDatabase

# The embedded text, as the contract states it, written here in SQL of the tests' own.
CONTRACT_TEXT = """concat_ws('. ',
    'Title: ' || nullif(trim(title), ''),
    'Broadcaster: ' || nullif(trim(broadcaster_name), ''),
    CASE WHEN trim(creator_name) <> trim(broadcaster_name)
         THEN 'Clipped by: ' || nullif(trim(creator_name), '') END,
    'Game: ' || nullif(trim(game_name), ''))"""


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, str]:
    """`manage.py ARGS` run to its end: its exit code, and its stdout and stderr together."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def site_env(command_env: dict[str, str], redis_url: str, unique_prefix: str):
    """`command_env` for a site's database (DATABASE_URL set per test with `on(site)`)."""

    def on(site: SiteDatabase) -> dict[str, str]:
        return {
            **command_env,
            "DATABASE_URL": site.url,
            "REDIS_URL": redis_url,
            "Q_CLUSTER_NAME": unique_prefix,
        }

    return on


def query(site: SiteDatabase, statement: str, params: list | None = None) -> list[tuple]:
    with site.connect(autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def as_array(vector: str) -> np.ndarray:
    """A vector or halfvec as PostgreSQL prints it (`embedding::text`)."""
    return np.array(vector.strip("[]").split(","), dtype=np.float32)
