"""The test database as seen from outside the test process."""


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
