"""The test database as seen from outside the test process, and the column it was migrated with."""


def restore_migrated_column() -> None:
    """A switch changes `clips.embedding` itself, which outlives a test's rows: put the
    migrated vector(768) column and its indexes back if a test left another."""
    from django.db import connection

    from embeddings.backfill.index import build_hnsw_index
    from embeddings.models import embedding_column_type

    if embedding_column_type() != ("vector", 768):
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE clips DROP COLUMN embedding, ADD COLUMN embedding vector(768)"
            )
        build_hnsw_index()


def database_url_of_tests() -> str:
    """A libpq URI for the database this test run uses, for subprocesses."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or ""
    if host.startswith("/"):
        port = f"&port={db['PORT']}" if db.get("PORT") else ""
        return f"postgresql://{auth}@/{db['NAME']}?host={quote(host)}{port}"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{db['NAME']}"
