"""Running the backfill as the tests do: in process (`backfill`, `embed`) or as a real
`manage.py` subprocess (`start_backfill`, `finish`), which is what a user runs."""

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command

from embeddings.backfill.pipeline import BackfillOptions
from embeddings.backfill.runs import execute_backfill
from embeddings.backfill.selection import Selection
from embeddings.models import served_settings
from embeddings.service.factory import build_embedding_service
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]  # the repository, where manage.py is


def backfill(*args: str) -> str:
    """`backfill_embeddings ARGS` in this process; returns its stdout."""
    out = io.StringIO()
    call_command("backfill_embeddings", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def embed(ids: list[int]) -> None:
    """Embed clips through the pipeline, as any door would."""
    config = served_settings()
    service = build_embedding_service(config)
    selection = Selection.of(config, force=True, ids=tuple(ids))
    try:
        execute_backfill(service, BackfillOptions(selection=selection), config, trigger="test")
    finally:
        service.close()


def start_backfill(env: dict[str, str], *args: str) -> subprocess.Popen:
    return start_command(env, "backfill_embeddings", *args)


def start_command(env: dict[str, str], command: str, *args: str) -> subprocess.Popen:
    """`manage.py COMMAND ARGS` as a real subprocess, stdout and stderr together."""
    return subprocess.Popen(
        [sys.executable, "manage.py", command, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Wait for a `start_backfill` run; its exit code and its stdout and stderr together."""
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def kill_hard(process: subprocess.Popen) -> None:
    """SIGKILL a run that must still be going: nothing of it gets to clean up."""
    assert process.poll() is None, "the run ended before it could be killed"
    process.kill()
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def start_searcher(env: dict[str, str], ids: list[int], tmp_path: Path) -> subprocess.Popen:
    """`tests.support.searcher` on these clips, as a web server started now; it reports when
    `tmp_path / "stop"` appears."""
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.searcher",
            "--ids",
            ",".join(map(str, ids)),
            "--every",
            "0.3",
            "--stop-file",
            str(tmp_path / "stop"),
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(ready.exists, 60)
    return process


def stop_searcher(process: subprocess.Popen, tmp_path: Path) -> dict:
    """Stop a `start_searcher` process; its report (searches made, inconsistent answers)."""
    (tmp_path / "stop").touch()
    out, _ = process.communicate(timeout=60)
    return json.loads(out.strip().splitlines()[-1])
