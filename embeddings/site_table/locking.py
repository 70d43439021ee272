"""DDL on a table other services write all day: a short lock wait, retried, never a queue.

Every `ALTER TABLE` takes ACCESS EXCLUSIVE, if only for a moment; while it waits behind an
open transaction, every later query on the table waits behind it. A short `lock_timeout`
makes the statement give up instead, so the site's writers stall for at most that long; the
statement is retried after a pause until it gets its moment (PostgreSQL, "ALTER TABLE" and
"lock_timeout"; the pattern zero-downtime migration tools use).
"""

import logging
import time

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import OperationalError

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_MS = 1000  # the longest a site's writer may wait behind one of our statements
ATTEMPTS = 60
PAUSE_SECONDS = 0.5  # doubled after each failed attempt, up to MAX_PAUSE_SECONDS
MAX_PAUSE_SECONDS = 5.0


class LockNotTaken(Exception):
    """The table stayed busy through every attempt: nothing was changed."""


def _lock_not_available(error: OperationalError) -> bool:
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) == "55P03"  # lock_not_available


def execute_briefly(connection: BaseDatabaseWrapper, statement: str, params=None) -> None:
    """Run one statement (autocommit) under a short lock timeout, retrying while it times out."""
    pause = PAUSE_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS:d}")
                try:
                    cursor.execute(statement, params)
                finally:
                    cursor.execute("RESET lock_timeout")
            return
        except OperationalError as error:
            if not _lock_not_available(error):
                raise
            logger.info("clips is busy (attempt %d of %d): trying again", attempt, ATTEMPTS)
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
    raise LockNotTaken(
        f"clips stayed locked by other sessions through {ATTEMPTS} attempts of"
        f" {LOCK_TIMEOUT_MS} ms: run migrate again when the site is quieter"
    )
