"""A django-q2 queue of the test's own: what this process queues, and the cluster stats it
reads (whether a `qcluster` is alive), under a name no other test or engineer's cluster uses.
A cluster started with `Q_CLUSTER_NAME` set to the same name takes those tasks."""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def queue_of_its_own(name: str) -> Iterator[str]:
    from django_q.conf import Conf

    saved = Conf.PREFIX, Conf.CLUSTER_NAME, Conf.Q_STAT
    Conf.PREFIX = Conf.CLUSTER_NAME = name
    Conf.Q_STAT = f"django_q:{name}:cluster"
    try:
        yield name
    finally:
        Conf.PREFIX, Conf.CLUSTER_NAME, Conf.Q_STAT = saved
