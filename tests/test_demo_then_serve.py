"""A newcomer's first two commands tell one story: `make serve` after `make demo` shows the
demo's clips (both on the embedded server, no key: the demo's own database and local model)."""

import os
import re
import subprocess

import pytest

from tests.support.cluster import ROOT
from tests.support.serving import free_port, get, start_serve, stop, wait_until_it_answers

pytestmark = pytest.mark.django_db
DEMO_CLIPS = 40


def _newcomer_env(**extra: str) -> dict[str, str]:
    """No DATABASE_URL, no key: what a fresh clone has (the embedded server the suite runs)."""
    dropped = ("DATABASE_URL", "DJANGO_DEBUG", "METRICS_TOKEN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_")) and k not in dropped
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_make_serve_after_make_demo_shows_the_demos_clips(tmp_path):
    make = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed-stamp",
        "-o",
        ".venv/.local-stamp",
    ]
    demo = subprocess.run(
        [*make, "demo", f"DEMO_CLIPS={DEMO_CLIPS}"],
        cwd=ROOT,
        env=_newcomer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    embedded = re.search(r"Processed: (\d+)", demo.stdout)
    assert embedded and int(embedded.group(1)) > 0, demo.stdout

    port = free_port()
    log = tmp_path / "serve.log"
    server = start_serve(_newcomer_env(PORT=str(port)), log)
    try:
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until_it_answers(metrics, server, log)
        status, _, body = get(metrics)
        assert status == 200
        text = body.decode()
        live = re.search(r"^clip_embeddings_live_clips (\S+)$", text, re.MULTILINE)
        current = re.search(r"^clip_embeddings_current_clips (\S+)$", text, re.MULTILINE)
        assert live and current, text
        assert 0 < float(live.group(1)) <= DEMO_CLIPS
        assert float(current.group(1)) == float(live.group(1)) == int(embedded.group(1))
    finally:
        stop(server)
