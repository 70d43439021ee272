"""Whether any django-q2 cluster (`manage.py qcluster`) is alive to take the tasks the admin
queues, and the message that says what was queued and who will do it."""

from dataclasses import dataclass

from embeddings.admin.wording import counted


@dataclass(frozen=True)
class Clusters:
    clusters: int
    workers: int


def live_clusters() -> Clusters | None:
    """The clusters of this site (Q_CLUSTER's name) that reported in the last seconds: each
    saves its stats every half second, kept 3 s by the broker's cache, so a stopped or killed
    cluster drops out by itself. None: the broker could not say."""
    from django_q.conf import Conf
    from django_q.status import Stat

    try:
        stats = Stat.get_all()
    except Exception:  # Redis or the cache unreachable: say nothing rather than fail the page
        return None
    alive = [stat for stat in stats if stat.status not in (Conf.STOPPING, Conf.STOPPED)]
    return Clusters(clusters=len(alive), workers=sum(len(stat.workers) for stat in alive))


def queued_message(what: str, tasks: int, group: str) -> tuple[str, bool]:
    """ "Queued ... as N tasks in group G" and who takes them; True when a cluster is alive."""
    queued = f"Queued {what} as {counted(tasks, 'django-q2 task')} in group {group}"
    clusters = live_clusters()
    if clusters is None:
        return (
            f"{queued}; a running qcluster takes them (whether one runs could not be told).",
            True,
        )
    if not clusters.clusters:
        return (
            f"{queued}; no qcluster is running to take them: start `manage.py qcluster` "
            "(they wait in the queue until one runs).",
            False,
        )
    running = counted(clusters.clusters, "qcluster")
    return (
        f"{queued}; {running} with {counted(clusters.workers, 'worker')} "
        f"{'is' if clusters.clusters == 1 else 'are'} taking them.",
        True,
    )
