"""A first `migrate` on an empty database with each documented storage works as the README says,
text-embedding-3-large at its native 3,072 dimensions in halfvec included (HNSW over `vector`
stops at 2,000 dimensions, so the first migration must not build that index first)."""

import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.support.cluster import ROOT
from tests.support.database import database_url_of_tests
from tests.support.site_database import with_database

pytestmark = pytest.mark.django_db


def test_a_fresh_migrate_with_halfvec_at_3072_dimensions(command_env):
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    admin_url = database_url_of_tests()
    url = with_database(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        env = {
            **command_env,
            "DATABASE_URL": url,
            "EMBEDDING_MODEL": "text-embedding-3-large",
            "EMBEDDING_DIMENSIONS": "3072",
            "EMBEDDING_STORAGE": "halfvec",
        }
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        with psycopg.connect(url) as conn:
            column = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'clips'::regclass AND attname = 'embedding'"
            ).fetchone()
            index = conn.execute(
                "SELECT pg_get_indexdef('clips_embedding_hnsw'::regclass)"
            ).fetchone()
        assert column == ("halfvec(3072)",)
        assert "halfvec_cosine_ops" in index[0]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
