"""Live sync's signal: after a transaction that wrote clips commits, make sure one sync loop runs.

The message carries nothing: the loop reads what needs a vector from the table, so a lost
message, a Redis restart or a killed worker loses no clip (the sweep schedule finds whatever
no loop did). Saves never wait on this: it runs after commit, and a broker or cache failure is
logged, never raised into the code that saved the clip (`on_commit(robust=True)`).

At most one loop runs per queue: the first nudge adds a marker to the cache (`cache.add`, one
round trip) and queues the task; later nudges see the marker and do nothing. The running loop
keeps the marker alive while it follows the stream and drops it when it ends, so a burst of
saves becomes one loop that sends few large requests, never a request per save.
"""

from django.core.cache import caches
from django.db import transaction

from embeddings.app_settings import embedding_settings

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
