"""Real django-q2 clusters for the tests: `manage.py qcluster` subprocesses, stopped for sure.

A cluster takes tasks from the queue named after it (django-q2's `Conf.PREFIX`): one that
outlived its test would steal the next test's tasks, so every cluster runs in its own session
and is ended in a `finally`.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository, where manage.py is


def start_cluster(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_cluster(process: subprocess.Popen) -> None:
    """SIGTERM, and the whole process group killed if it has not stopped within 30 s (a live
    sync loop may hold a worker that long)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextmanager
def running_cluster(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    cluster = start_cluster(env)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
