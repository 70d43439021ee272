"""Live sync's signal: after a transaction that wrote clips commits, make sure one sync loop runs.

The message carries nothing: the loop reads what needs a vector from the table, so a lost
message, a Redis restart or a killed worker loses no clip (the sweep schedule finds whatever
no loop did). Saves never wait on this: it runs after commit, and a broker or cache failure is
logged, never raised into the code that saved the clip (`on_commit(robust=True)`).

At most one loop runs per queue: the first nudge adds a marker to the cache (`cache.add`, one
round trip) and queues the task; later nudges see the marker and do nothing. The running loop
keeps the marker alive while it follows the stream and drops it when it ends, so a burst of
saves becomes one loop that sends few large requests, never a request per save.

Writers that bypass the ORM (raw SQL, another service) are heard through the database itself:
a statement trigger on `clips` notifies CHANNEL, and a thread in every django-q2 worker listens
and makes the same request. The notification carries nothing either; the sweep finds whatever
a lost one would have announced.
"""

import logging
import threading
import time

import psycopg
from django.core.cache import caches
from django.db import close_old_connections, connections, transaction
from psycopg import sql

from embeddings.app_settings import embedding_settings

logger = logging.getLogger(__name__)

SYNC_FUNC = "embeddings.tasks.sync_live_clips"
CACHE_ALIAS = "default"
# A loop refreshes the marker far more often than this; a loop killed with -9 stops doing so,
# and the next save after this many seconds starts a new one.
MARKER_SECONDS = 10


def marker_key() -> str:
    from django_q.conf import Conf  # the queue's name: a loop serves the cluster it runs in

    return f"clip-embeddings:live-sync:{Conf.PREFIX}"


def clips_changed(using: str | None = None) -> None:
    """Call after writing clips through the ORM; does its work once the transaction commits."""
    if embedding_settings().live_sync:
        transaction.on_commit(request_sync, using=using, robust=True)


def request_sync() -> None:
    """Queue the sync loop unless one is already queued or running."""
    if mark_loop():
        from django_q.tasks import async_task

        async_task(SYNC_FUNC, task_name="live-sync")


def mark_loop() -> bool:
    """Mark a loop as on its way; False if one already is."""
    return caches[CACHE_ALIAS].add(marker_key(), "queued", timeout=MARKER_SECONDS)


def keep_loop_marked() -> None:
    """The loop is alive: nudges need not queue another one."""
    caches[CACHE_ALIAS].set(marker_key(), "running", timeout=MARKER_SECONDS)


def unmark_loop() -> None:
    """The loop is ending: the next nudge queues a new one."""
    caches[CACHE_ALIAS].delete(marker_key())


# The change feed: one notification per transaction that wrote clips' text, however it was written.
CHANNEL = "clip_embeddings_changed"
NOTIFY_FUNCTION = "clip_embeddings_notify"
NOTIFY_TRIGGER = "clips_embeddings_notify"
# What the embedded text is made of, and `is_removed` (models.TEXT_FIELDS, a layer above).
TEXT_COLUMNS = ("title", "broadcaster_name", "creator_name", "game_name", "is_removed")
LISTENER_NAME = "clip-embeddings listener"
# A burst of commits makes a listener ask at most this often: a running loop polls as often.
REQUEST_INTERVAL = 0.25
RECONNECT_SECONDS = (0.5, 30.0)  # the first wait after a lost connection, and the longest


def change_feed_sql(table: str = "clips") -> list[str]:
    """Statements that make `table` notify CHANNEL after each statement that inserts rows or
    sets their text columns.

    One trigger call per statement, not per row, on a table the site writes all day; the
    notifications of a transaction carry the same empty payload, so PostgreSQL folds them into
    one, delivered at commit (none for a rollback). Idempotent, one statement each (a caller
    may run them under a short lock_timeout); CREATE OR REPLACE TRIGGER (PostgreSQL 14, as
    Django 5.2 requires) lets readers through, where DROP TRIGGER would lock them out."""
    names = {
        "function": sql.Identifier(NOTIFY_FUNCTION),
        "trigger": sql.Identifier(NOTIFY_TRIGGER),
        "table": sql.Identifier(table),
    }
    function = sql.SQL(
        """CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify({channel}, '');
    RETURN NULL;
END $$"""
    ).format(channel=sql.Literal(CHANNEL), **names)
    trigger = sql.SQL(
        "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OF {columns} ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    ).format(columns=sql.SQL(", ").join(map(sql.Identifier, TEXT_COLUMNS)), **names)
    return [function.as_string(), trigger.as_string()]


def drop_change_feed_sql(table: str = "clips") -> list[str]:
    """Undo `change_feed_sql`. Idempotent."""
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}")
        .format(sql.Identifier(NOTIFY_TRIGGER), sql.Identifier(table))
        .as_string(),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(NOTIFY_FUNCTION)).as_string(),
    ]


def listener_application_name(queue: str) -> str:
    """How the listeners of the cluster serving `queue` show in `pg_stat_activity`."""
    return f"{LISTENER_NAME} {queue}"[:63]


def start_listener(sender, **kwargs) -> None:
    """django-q2's `post_spawn`, in every worker it starts (and restarts): listen to the change
    feed in a thread that ends with the worker. Every worker listening keeps one hearing while
    another is being recycled; the cache marker keeps their requests to one loop."""
    if embedding_settings().live_sync:
        threading.Thread(target=listen, name="clip-change-feed", daemon=True).start()


def listen() -> None:
    """Hear CHANNEL for ever. A lost connection (or a refused one) is opened again after a
    growing wait, and sync requested once for what was written unheard meanwhile. Nothing is
    raised into the worker."""
    first, longest = RECONNECT_SECONDS
    wait, missed = first, False
    while True:
        try:
            with _connect() as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                wait = first
                if missed:
                    _request()
                _hear(conn)
        except Exception as err:
            logger.warning(
                "live sync's listener lost the database (%s); again in %.1f s", err, wait
            )
        missed = True
        time.sleep(wait)
        wait = min(wait * 2, longest)


def _connect() -> psycopg.Connection:
    """A session of its own (LISTEN needs autocommit and a session nothing else uses), made
    from the `default` database's settings. A peer gone without a word (a failover, a NAT that
    forgot the connection) is noticed by TCP keepalives within about 90 s."""
    from django_q.conf import Conf

    params = {
        "connect_timeout": 10,
        "keepalives_idle": 60,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        **connections["default"].get_connection_params(),
        "application_name": listener_application_name(Conf.PREFIX),
    }
    return psycopg.Connection.connect(**params, autocommit=True)


def _hear(conn: psycopg.Connection) -> None:
    """Request sync after each notification, at most every REQUEST_INTERVAL: a request made
    after a commit was heard covers it, whatever else arrived in between."""
    asked = time.monotonic() - REQUEST_INTERVAL
    while True:
        for _ in conn.notifies(stop_after=1):
            pass
        pause = asked + REQUEST_INTERVAL - time.monotonic()
        if pause > 0:
            for _ in conn.notifies(timeout=pause):
                pass
        _request()
        asked = time.monotonic()


def _request() -> None:
    try:
        request_sync()
    except Exception:
        logger.exception("live sync's listener could not request a sync loop")
    finally:
        close_old_connections()  # the ORM broker queues through this thread's own connection
