"""An endpoint that stops answering mid-run ends the run soon, once, naming where it was
sending, instead of every request in flight spending its own retries first."""

import json
import time
import urllib.request

import pytest

from embeddings.models import BackfillRun, Clip
from tests.support.clips import make_clips
from tests.support.commands import finish, start_backfill
from tests.support.openai_server import start_subprocess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def requests_seen(base_url: str) -> int:
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_control/stats", timeout=5) as response:
        return json.load(response)["requests"]


def test_a_dead_endpoint_ends_a_3000_clip_run_within_30_s_naming_its_url(command_env):
    make_clips(3_000)
    server, base_url = start_subprocess("--latency-ms", "200")
    env = {
        **command_env,
        "OPENAI_BASE_URL": base_url,
        "EMBEDDING_MAX_INPUTS_PER_REQUEST": "50",
        "EMBEDDING_MAX_RETRIES": "6",
    }
    try:
        run = start_backfill(env)
        wait_for(lambda: requests_seen(base_url) >= 5, 60)
    finally:
        server.terminate()
        server.wait(timeout=10)
    killed = time.monotonic()

    code, output = finish(run, timeout=120)
    ended = time.monotonic() - killed

    assert ended < 30, f"the run went on {ended:.0f} s after its endpoint died:\n{output}"
    assert code == 1, output
    assert "stopped answering" in output and base_url in output, output
    assert "Traceback" not in output
    written = Clip.objects.filter(embedding__isnull=False).count()
    assert 0 < written < 3_000  # what was embedded before the end is kept
    assert BackfillRun.objects.get().status == BackfillRun.Status.FAILED
