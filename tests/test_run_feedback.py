"""What a user sees of a long run: Ctrl-C answers at once and a second one stops now, progress
comes with a rate and a time left on a clock, a killed run shows the time it lived, and the
local provider's estimate is measured on this machine."""

import importlib.util
import io
import os
import pty
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.core.management.base import OutputWrapper

from embeddings.app_settings import embedding_settings
from embeddings.backfill.claims import settle_dead_runs
from embeddings.backfill.pipeline import BackfillProgress
from embeddings.backfill.progress_report import ProgressReporter, format_eta, progress_line
from embeddings.models import BackfillRun, Clip, EmbeddingBatch, EmbeddingClaim
from tests.support.clips import make_clips
from tests.support.commands import ROOT, finish, kill_hard, start_backfill
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Lines:
    """A subprocess's output, read as it comes, each line with the time it came."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append((time.monotonic(), line))

    def first(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)

    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait_closed(self, timeout: float = 10) -> None:
        """Until the stream ends (the process exited and every line it wrote is read)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), self.text()


def start_reading(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Lines]:
    process = start_backfill(env, *args)
    return process, Lines(process.stdout)


def slow_run(command_env, openai_server) -> dict[str, str]:
    make_clips(300)
    openai_server.update_faults(latency_ms=400)
    return {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}


# -- Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_says_at_once_what_it_finishes_and_a_second_ctrl_c_stops_now(
    command_env, openai_server
):
    env = slow_run(command_env, openai_server)
    process, out = start_reading(env, "-batch", "10", "--concurrency", "2")
    wait_for(lambda: openai_server.stats.requests >= 2)

    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    wait_for(lambda: out.first("stopping: finishing") is not None, 5)
    assert out.first("stopping: finishing") - sent < 2, out.text()
    assert "requests in flight; Ctrl-C again to stop now" in out.text()

    process.send_signal(signal.SIGINT)
    second = time.monotonic()
    process.wait(timeout=10)
    assert time.monotonic() - second < 5, out.text()
    out.wait_closed()
    assert process.returncode == 130, out.text()
    assert "Backfill Summary" in out.text()
    assert "stopped now" in out.text()
    run = BackfillRun.objects.latest("pk")
    assert run.status == BackfillRun.Status.INTERRUPTED
    assert run.duration_seconds > 0
    assert not EmbeddingClaim.objects.filter(run_id=run.pk).exists()


def test_one_ctrl_c_finishes_what_is_in_flight_and_exits_1(command_env, openai_server):
    env = slow_run(command_env, openai_server)
    process = start_backfill(env, "-batch", "10", "--concurrency", "1")
    wait_for(lambda: openai_server.stats.requests >= 1)

    process.send_signal(signal.SIGINT)
    code, output = finish(process)

    assert code == 1, output
    assert "stopping: finishing 1 requests in flight" in output
    assert "Interrupted" in output
    assert 0 < Clip.objects.filter(embedding__isnull=False).count() < 300
    assert BackfillRun.objects.latest("pk").status == BackfillRun.Status.INTERRUPTED


def test_ctrl_c_while_waiting_on_the_batch_api_says_so_at_once_and_keeps_the_batch(
    command_env, openai_server
):
    make_clips(30)
    openai_server.update_faults(batch_seconds=600)  # the batch stays open at the API
    env = {**command_env, "EMBEDDING_BATCH_POLL_SECONDS": "600"}
    process, out = start_reading(env, "--batch-api", "--wait")
    wait_for(lambda: EmbeddingBatch.objects.filter(batch_id__isnull=False).exists(), 30)

    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    wait_for(lambda: out.first("stopping after this step") is not None, 5)
    process.wait(timeout=10)
    out.wait_closed()

    assert out.first("stopping after this step") - sent < 2, out.text()
    assert "--batch-api --wait` collects them" in out.text()
    assert process.returncode == 1, out.text()
    assert BackfillRun.objects.latest("pk").status == BackfillRun.Status.INTERRUPTED
    batch = EmbeddingBatch.objects.get()
    assert batch.collected_at is None and batch.items.count() == 30


def test_the_help_says_what_ctrl_c_does(command_env):
    done = subprocess.run(
        [sys.executable, "manage.py", "backfill_embeddings", "--help"],
        cwd=ROOT,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "second Ctrl-C stops at once" in " ".join(done.stdout.split())


# -- progress -----------------------------------------------------------------------------


def test_a_progress_line_has_the_rate_and_the_time_left():
    p = BackfillProgress(total=11656, processed=3000, skipped=10, failed=2)

    line = progress_line(p, 412.3)

    assert line.startswith("Progress: 3012/11656 (25.8%) - processed: 3000")
    assert line.endswith("- 412 clips/s, about 21 s left")
    assert progress_line(p, 0.0).endswith("waiting for the first answers")
    assert format_eta(80) == "1 min 20 s"
    assert format_eta(2 * 3600 + 300) == "2 h 5 min"


def test_progress_lines_come_on_the_clock_when_no_batch_is_written():
    out = io.StringIO()
    reporter = ProgressReporter(OutputWrapper(out), every=0.3)
    p = BackfillProgress(total=100)
    reporter.update(p)
    p.processed = 10
    time.sleep(1.1)  # no update: the clock alone writes lines
    reporter.close()

    lines = [line for line in out.getvalue().splitlines() if line.startswith("Progress:")]
    assert len(lines) >= 3, out.getvalue()
    assert any("clips/s, about" in line for line in lines), out.getvalue()


def test_on_a_terminal_the_rate_shows_within_5_seconds(command_env, openai_server):
    env = slow_run(command_env, openai_server)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "backfill_embeddings", "-batch", "10", "--concurrency", "1"],
        cwd=ROOT,
        env=env,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen, started = b"", None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                seen += os.read(leader, 4096)
            except OSError:
                break
            if started is None and b"Progress:" in seen:
                started = time.monotonic()
            if b"clips/s, about" in seen:
                break
        assert started is not None, seen
        assert b"clips/s, about" in seen, seen
        assert time.monotonic() - started < 5
    finally:
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        os.close(leader)


# -- a run killed with -9 -----------------------------------------------------------------


def test_a_run_killed_before_its_first_write_shows_the_time_it_lived(command_env, openai_server):
    make_clips(50)
    openai_server.update_faults(latency_ms=15_000)  # no answer, so no batch is ever written
    process = start_backfill(command_env, "-batch", "10")
    wait_for(lambda: BackfillRun.objects.filter(status=BackfillRun.Status.RUNNING).exists())
    started = time.monotonic()
    time.sleep(5)

    kill_hard(process)
    lived = time.monotonic() - started
    settle_dead_runs()

    run = BackfillRun.objects.latest("pk")
    assert run.status == BackfillRun.Status.INTERRUPTED
    assert run.duration_seconds >= lived - 2.5, run.duration_seconds


# -- the local provider's estimate ----------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="the local extra"
)
def test_the_local_estimate_is_measured_and_offers_no_batch_api(settings):
    from embeddings.backfill.pipeline import BackfillOptions
    from embeddings.backfill.selection import Selection
    from embeddings.management.commands.backfill_embeddings import Command

    settings.EMBEDDING_PROVIDER = "local"
    settings.EMBEDDING_MODEL = "all-MiniLM-L6-v2"
    settings.EMBEDDING_DIMENSIONS = 384
    make_clips(300)
    config = embedding_settings()
    out = io.StringIO()
    command = Command(stdout=out, stderr=io.StringIO())

    command._estimate(BackfillOptions(selection=Selection.of(config)), config, as_json=False)

    text = out.getvalue()
    assert "Clips to embed: 300" in text
    assert "measured: the local model embedded 64 of these clips" in text
    assert "clips/s on this machine" in text
    assert "Estimated cost: none" in text
    assert "--batch-api:" not in text and "With --batch-api" not in text
    assert "at the configured limits" not in text
