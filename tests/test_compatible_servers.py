"""OpenAI-compatible servers that are not OpenAI (Infinity, LiteLLM, vLLM, TEI, Ollama), as
the test server's modes play them: the endpoint is checked before the work starts (a wrong
base URL says the one that answers; an unknown model lists what is served), errors name what
was really sent, usage reported in characters does not slow pacing, and clips a `--force`
run failed are retried by the next plain run.

Every case runs `manage.py backfill_embeddings` as a real subprocess (docs/compatible-servers.md
says which of its recipes these cover)."""

import re
import subprocess
import sys
import time
import uuid

import pytest

from embeddings.models import Clip
from embeddings.service.rate_limiter import LocalRateLimiter, RedisRateLimiter
from tests.support.clips import make_clips
from tests.support.commands import ROOT, finish, start_backfill

pytestmark = pytest.mark.django_db(transaction=True)


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    return finish(start_backfill(env, *args))


def one_error_line(code: int, output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert "Traceback" not in output
    assert "sk-test-not-a-real-key" not in output
    return lines[-1]


def test_a_server_at_the_root_named_with_v1_gets_the_root_url_as_the_fix(
    command_env, openai_server
):
    make_clips(5)
    openai_server.update_faults(prefix="", served_models=command_env["EMBEDDING_MODEL"])

    code, output = run(command_env)  # OPENAI_BASE_URL ends in /v1, as the fixture sets it

    line = one_error_line(code, output)
    assert f"this server answers at the root: set OPENAI_BASE_URL={openai_server.url}" in line
    assert "end in /v1?" not in output
    assert openai_server.stats.requests == 0  # said before any embeddings request
    assert Clip.objects.filter(embedding__isnull=False).count() == 0

    code, output = run({**command_env, "OPENAI_BASE_URL": openai_server.url})
    assert code == 0, output
    assert Clip.objects.filter(embedding__isnull=False).count() == 5


def test_a_v1_server_named_without_it_gets_the_v1_url_as_the_fix(command_env, openai_server):
    make_clips(3)
    openai_server.update_faults(served_models=command_env["EMBEDDING_MODEL"])

    code, output = run({**command_env, "OPENAI_BASE_URL": openai_server.url + "/"})

    line = one_error_line(code, output)
    assert f"answers under /v1: set OPENAI_BASE_URL={openai_server.base_url}" in line


def test_an_unknown_model_lists_what_the_server_serves(command_env, openai_server):
    make_clips(3)
    openai_server.update_faults(prefix="", served_models="all-MiniLM-L6-v2,bge-small-en-v1.5")

    code, output = run({**command_env, "OPENAI_BASE_URL": openai_server.url})

    line = one_error_line(code, output)
    model = command_env["EMBEDDING_MODEL"]
    assert f"does not serve model {model} (it serves: all-MiniLM-L6-v2, bge-small-en-v1.5)" in (
        line
    )
    assert "EMBEDDING_MODEL" in line
    assert openai_server.stats.requests == 0


def test_a_server_without_models_is_not_refused_for_that(command_env, openai_server):
    make_clips(4)  # the test server's default: no /models anywhere

    code, output = run(command_env)

    assert code == 0, output
    assert Clip.objects.filter(embedding__isnull=False).count() == 4


def test_a_server_at_the_root_without_models_is_told_by_an_empty_request(
    command_env, openai_server
):
    make_clips(3)
    openai_server.update_faults(prefix="")  # at the root, and no /models to tell it by
    root = openai_server.base_url.removesuffix("/v1")

    code, output = run(command_env)

    line = one_error_line(code, output)
    assert f"answers 404 at {openai_server.base_url}/embeddings" in line
    assert f"this server answers at the root: set OPENAI_BASE_URL={root}" in line
    assert openai_server.stats.ok == 0 and openai_server.stats.inputs_received == 0
    assert Clip.objects.filter(embedding__isnull=False).count() == 0


def test_a_right_base_url_without_models_costs_no_probe_request(command_env, openai_server):
    make_clips(3)  # the default: under /v1, no /models; the root answers 404

    code, output = run(command_env)

    assert code == 0, output
    assert openai_server.stats.requests == 1, "one request for three clips, no probe"


def test_a_size_error_names_the_size_sent_not_a_stale_setting(command_env, openai_server):
    make_clips(3)
    assert run(command_env)[0] == 0  # the database now serves 768 dimensions
    for clip in Clip.objects.all():  # new texts: the cache cannot answer them
        Clip.objects.filter(pk=clip.pk).update(title=f"Retitled {clip.pk}")
    openai_server.update_faults(ignore_dimensions=True, native_dimensions=384)

    code, output = run({**command_env, "EMBEDDING_DIMENSIONS": "384"}, "--force")

    line = one_error_line(code, output)
    assert "returned 384-dimensional vectors but the served version has 768 dimensions" in line
    assert "dimensions=768" in line
    assert "EMBEDDING_DIMENSIONS=384" not in line.split("(the request had")[0]


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_a_charge_makes_the_next_request_wait_for_the_tokens_used(kind, redis_client):
    limits = {"requests_per_minute": 6000, "tokens_per_minute": 6000}  # 100 tokens/s
    key = f"test:clip-embeddings:ratelimit:{uuid.uuid4().hex}"
    limiter = (
        LocalRateLimiter(**limits)
        if kind == "local"
        else RedisRateLimiter(redis_client, key=key, **limits)
    )
    try:
        assert limiter.acquire(5000) < 0.1
        limiter.charge(1000)  # the answer said 6000 were used: the bucket is empty
        assert 0.05 < limiter.try_acquire(10) <= 0.15  # 10 tokens at 100/s
        limiter.charge(-6000)  # a refund never fills it beyond capacity
        assert limiter.try_acquire(6000) == 0
    finally:
        redis_client.delete(key)


def test_usage_reported_in_characters_paces_by_the_estimate_and_says_so_once(
    command_env, openai_server
):
    make_clips(100)  # about 20 estimated tokens each, 4x as many characters
    openai_server.update_faults(usage_in_characters=True)
    env = {**command_env, "EMBEDDING_TOKENS_PER_MINUTE": "2500"}

    started = time.monotonic()
    code, output = run(env, "--batch", "10", "--concurrency", "1")
    elapsed = time.monotonic() - started

    assert code == 0, output
    # Charged by characters (about 8,000) the run would wait about two minutes for its TPM.
    assert elapsed < 30, output
    assert output.count("usage.prompt_tokens=") == 1, output
    assert "pacing and counting by the estimate" in output
    estimated = sum(entry[2] for entry in openai_server.stats.request_log)  # bytes / 4
    tokens = int(re.search(r"^Tokens: ([\d,]+)", output, re.M).group(1).replace(",", ""))
    assert tokens == estimated  # the summary counts the estimate, not the characters


def test_clips_a_force_run_failed_are_retried_by_the_next_plain_run(command_env, openai_server):
    clips = make_clips(30)
    assert run(command_env)[0] == 0
    poisoned = {clip.id for clip in clips if clip.title.endswith("7")}  # 7, 17, 27
    for clip in clips:  # new texts, so no cache answers the --force run
        Clip.objects.filter(pk=clip.pk).update(title=f"{clip.title} again")
    Clip.objects.filter(pk__in=poisoned).update(creator_name="poison")
    openai_server.update_faults(bad_input_marker="poison")

    code, output = run(command_env, "--force")

    assert code != 2, output
    failed = set(Clip.objects.filter(embedding_error__isnull=False).values_list("id", flat=True))
    assert failed == poisoned, output
    assert Clip.objects.filter(pk__in=poisoned, embedding__isnull=False).count() == 3  # kept

    openai_server.update_faults(bad_input_marker=None)
    openai_server.reset_stats()
    code, output = run(command_env)

    assert code == 0, output
    assert "Found 3 clips to process" in output, output
    assert openai_server.stats.inputs_received == 3
    assert not Clip.objects.filter(embedding_error__isnull=False).exists()

    code, output = run(command_env)  # and once they succeeded, nothing is left to redo
    assert code == 0, output
    assert "Found 3 clips" not in output and openai_server.stats.inputs_received == 3, output


def test_the_local_model_loads_without_progress_noise(command_env):
    pytest.importorskip("sentence_transformers")
    env = {
        **command_env,
        "EMBEDDING_PROVIDER": "local",
        "EMBEDDING_MODEL": "all-MiniLM-L6-v2",
        "EMBEDDING_DIMENSIONS": "384",
    }
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    env.pop("TRANSFORMERS_VERBOSITY", None)
    script = (
        "from embeddings.providers.local import LocalProvider; "
        "p = LocalProvider(model='all-MiniLM-L6-v2', dimensions=384); "
        "print('size', p.embed(['clutch ace']).vectors.shape[1])"
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("size 384")
    output = result.stdout + result.stderr
    assert "Loading weights" not in output and "it/s" not in output, output
