"""The promise under fire: whatever happens, no clip keeps a wrong vector, nothing is silently
skipped, work is not paid for twice and the API key stays secret.

Everything runs end to end through `manage.py backfill_embeddings` subprocesses (or
`call_command` and the django-q2 task where a thread is simpler) against the test server, and
ends by reading back every stored vector: the test server's vectors are a pure function of the
text, so a vector given to the wrong clip, or a garbled one, cannot pass. Kill times are drawn
from seeded generators, so a failing iteration can be replayed.
"""

import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import psycopg
import pytest
import redis
from django.core.management import get_commands
from django.db import connection, connections, transaction

from embeddings.app_settings import embedding_settings
from embeddings.backfill.claims import ClaimedClip, RunLease, claim_next
from embeddings.backfill.selection import Selection
from embeddings.backfill.writer import EmbeddedClip, write_embeddings
from embeddings.models import BackfillRun, Clip, EmbeddingClaim
from embeddings.tasks import embed_new_clips
from tests.support.assertions import a_later_run_finishes_the_job, assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import ROOT, backfill, finish, kill_hard, start_backfill
from tests.support.database import database_url_of_tests
from tests.support.openai_server import expected_vector
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

DIMS = 768
MAX_INPUT_BYTES = 8192 * 4  # EMBEDDING_MAX_TOKENS_PER_INPUT at ~4 bytes per token


def as_sent(text: str) -> str:
    """The text the API is asked to embed: cut to the per-input limit on a character edge."""
    return text.encode("utf-8")[:MAX_INPUT_BYTES].decode("utf-8", errors="ignore")


def assert_nothing_wrong_stored() -> int:
    """Every stored vector is the API's vector of its clip's present text; returns how many."""
    rows = (
        Clip.objects.filter(embedding__isnull=False)
        .with_text()
        .values_list("id", "text", "embedding", "embedding_text_hash", "text_hash")
    )
    for clip_id, text, vector, made_from, current in rows:
        assert made_from == current, f"clip {clip_id} keeps a vector of other text"
        np.testing.assert_array_equal(
            np.asarray(vector, dtype=np.float32),
            expected_vector(as_sent(text), DIMS),
            err_msg=f"clip {clip_id} has a wrong vector",
        )
    return len(rows)


def assert_no_claims_left() -> None:
    assert not EmbeddingClaim.objects.exists(), "a finished run left claims behind"


def claims_of_runs_after(run_id: int) -> bool:
    return EmbeddingClaim.objects.filter(run_id__gt=run_id).exists()


def last_run_id() -> int:
    return BackfillRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run any management command as a user would; stdout and stderr together."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout


# -- crash safety: kill -9 while claiming, while requests are in flight, while writing ---------


def test_runs_killed_while_claiming_leave_nothing_wrong_and_a_rerun_finishes(
    command_env, openai_server
):
    make_clips(400)
    openai_server.update_faults(latency_ms=20)
    # One small claim per request: the reader claims again and again for the whole run.
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "5"}
    rng = random.Random("claiming")
    for _ in range(3):
        previous = last_run_id()
        victim = start_backfill(env, "-batch", "5", "--concurrency", "2")
        wait_for(lambda previous=previous: claims_of_runs_after(previous))
        time.sleep(rng.uniform(0, 0.3))

        kill_hard(victim)

        assert assert_nothing_wrong_stored() < 400
    a_later_run_finishes_the_job(command_env, openai_server)
    assert_no_claims_left()


def test_runs_killed_with_requests_in_flight_leave_nothing_wrong_and_a_rerun_finishes(
    command_env, openai_server
):
    make_clips(400)
    openai_server.update_faults(latency_ms=250)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}
    rng = random.Random("in flight")
    answered_to_the_dead = 0
    for _ in range(3):
        before = openai_server.stats.requests
        victim = start_backfill(env, "-batch", "10", "--concurrency", "2")
        wait_for(lambda before=before: openai_server.stats.requests > before)
        time.sleep(rng.uniform(0, 0.5))

        at_kill = openai_server.stats.ok
        kill_hard(victim)
        wait_for(lambda: openai_server.serving == 0)  # it answers the dead process too
        answered_to_the_dead += openai_server.stats.ok - at_kill

        assert assert_nothing_wrong_stored() < 400
    assert answered_to_the_dead > 0, "no kill landed while a request was in flight"
    a_later_run_finishes_the_job(command_env, openai_server)
    assert_no_claims_left()


def _writers_blocked_by(conn: psycopg.Connection, holder: psycopg.Connection) -> list[int]:
    """Backends whose UPDATE of clips waits for `holder`'s row lock (not any lock: two
    writers wait on each other for moments, e.g. extending the table)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        " AND query LIKE '%%UPDATE \"clips\" SET%%'",
        (holder.info.backend_pid,),
    ).fetchall()
    return [pid for (pid,) in rows]


def _backend_alive(conn: psycopg.Connection, pid: int) -> bool:
    return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone())


def test_runs_killed_in_the_middle_of_a_write_leave_nothing_half_written(
    command_env, openai_server
):
    """A row lock held by the test stops the writer inside its transaction, after the COPY:
    the kill lands in the middle of a write, every time, at a clip drawn at random."""
    clips = make_clips(400)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}
    rng = random.Random("writing")
    url = database_url_of_tests()
    with psycopg.connect(url, autocommit=True) as observer:
        for _ in range(3):
            pending = list(Clip.objects.filter(embedding__isnull=True).values_list("pk", flat=True))
            blocked = rng.choice(pending)
            with psycopg.connect(url) as holder:  # one transaction, held until the kill
                holder.execute("SELECT 1 FROM clips WHERE id = %s FOR UPDATE", (blocked,))
                victim = start_backfill(env, "-batch", "10", "--concurrency", "2")
                try:
                    wait_for(lambda holder=holder: _writers_blocked_by(observer, holder))
                    (writer,) = _writers_blocked_by(observer, holder)
                    time.sleep(rng.uniform(0, 0.2))
                finally:
                    kill_hard(victim)  # never left running into the next test
                holder.rollback()
            wait_for(lambda writer=writer: not _backend_alive(observer, writer))

            assert Clip.objects.get(pk=blocked).embedding is None, "a killed write committed"
            assert assert_nothing_wrong_stored() < len(clips)
    a_later_run_finishes_the_job(command_env, openai_server)
    assert_no_claims_left()


# -- concurrency: runs at once never pay for a clip twice ---------------------------------------


def test_four_backfills_at_once_pay_for_each_clip_once(command_env, openai_server):
    make_clips(800)
    openai_server.update_faults(latency_ms=50)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "40"}

    runs = [start_backfill(env, "-batch", "20", "--concurrency", "2") for _ in range(4)]
    results = [finish(run) for run in runs]

    assert [code for code, _ in results] == [0, 0, 0, 0], "\n".join(out for _, out in results)
    assert openai_server.stats.duplicates == 0
    assert sum(openai_server.stats.texts.values()) == 800
    assert BackfillRun.objects.filter(status="succeeded").count() == 4
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])
    assert_no_claims_left()


def in_a_thread(work: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as err:  # reported by the test, not lost in the thread
            errors.append(err)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _waits_on_a_lock(conn: psycopg.Connection, pid: int) -> bool:
    """Whether backend `pid` waits on a lock. By pid: the claim statement is longer than the
    text pg_stat_activity keeps of a query (track_activity_query_size, 1 kB by default)."""
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
    return row.fetchone() == ("Lock",)


def test_a_clip_written_while_another_run_claims_it_is_not_claimed_again(settings):
    clips = make_clips(3)
    config = embedding_settings()
    model, dims = config.model, config.dimensions
    selection = Selection(model=model, dimensions=dims)
    leases = [RunLease(), RunLease()]
    first, second = (
        BackfillRun.objects.create(pk=lease.run_id, model=model, dimensions=dims)
        for lease in leases
    )
    held, _, _ = claim_next(selection, after_id=0, limit=10, run_id=first.pk)
    assert len(held) == 3
    written, commit = threading.Event(), threading.Event()

    def write_one_and_hold_the_commit() -> None:
        with transaction.atomic():
            vector = expected_vector(held[0].text, dims)
            clip = EmbeddedClip(held[0].id, held[0].text_hash, vector)
            write_embeddings([clip], model=model, dimensions=dims, run_id=first.pk)
            written.set()
            commit.wait(timeout=30)

    errors: list[BaseException] = []
    claimed: list[list[ClaimedClip]] = []
    writer = in_a_thread(write_one_and_hold_the_commit, errors)
    try:
        assert written.wait(timeout=30)
        claimer_pid: list[int] = []

        def claim() -> None:
            connection.ensure_connection()
            claimer_pid.append(connection.connection.info.backend_pid)
            claimed.append(claim_next(selection, after_id=0, limit=10, run_id=second.pk)[0])

        claimer = in_a_thread(claim, errors)
        with psycopg.connect(database_url_of_tests(), autocommit=True) as observer:
            wait_for(
                lambda: (
                    not claimer.is_alive()
                    or (claimer_pid and _waits_on_a_lock(observer, claimer_pid[0]))
                ),
                30,
            )
            assert claimer.is_alive(), "the claim did not wait for the write's commit"
    finally:
        commit.set()
        writer.join(timeout=30)
    claimer.join(timeout=30)
    for lease in leases:
        lease.close()

    assert errors == []
    assert Clip.objects.get(pk=held[0].id).embedding is not None
    assert claimed == [[]], f"clip {clips[0].pk} was written, yet claimed by the second run"


def test_a_backfill_racing_the_scheduled_task_and_call_command_pays_for_each_clip_once(
    command_env, openai_server, embedding_config
):
    embedding_config(
        EMBEDDING_MODEL=command_env["EMBEDDING_MODEL"],
        EMBEDDING_SEND_DIMENSIONS="true",
        EMBEDDING_SCHEDULE_LIMIT=10_000,
        EMBEDDING_MAX_INPUTS_PER_REQUEST=40,
        EMBEDDING_CONCURRENCY=2,
    )
    make_clips(800)
    openai_server.update_faults(latency_ms=50)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "40"}
    errors: list[BaseException] = []

    processes = [start_backfill(env, "-batch", "20", "--concurrency", "2") for _ in range(2)]
    threads = [
        in_a_thread(embed_new_clips, errors),
        in_a_thread(lambda: backfill("-batch", "20", "--concurrency", "2"), errors),
    ]
    results = [finish(process) for process in processes]
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert not [thread for thread in threads if thread.is_alive()], "a run never finished"
    assert [code for code, _ in results] == [0, 0], "\n".join(out for _, out in results)
    assert sorted(BackfillRun.objects.values_list("trigger", flat=True)) == [
        "command",
        "command",
        "command",
        "schedule",
    ]
    assert not BackfillRun.objects.exclude(status="succeeded").exists()
    assert openai_server.stats.duplicates == 0
    assert sum(openai_server.stats.texts.values()) == 800
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])
    assert_no_claims_left()


# -- outages: Redis gone, the API gone for a while, the API gone for longer ------------------


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, to kill or freeze; no one else uses it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    own = PrivateRedis(tmp_path)
    yield own
    own.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def assert_said_once(output: str, phrase: str) -> None:
    lines = [line for line in output.splitlines() if phrase in line]
    assert len(lines) == 1, f"{phrase!r} logged {len(lines)} times:\n{output}"
    assert "Error" in lines[0], f"the cause is missing: {lines[0]}"


REDIS_DOWN = ("embedding cache unavailable", "Redis rate limiter unavailable")


@pytest.mark.redis
def test_redis_stopped_before_a_backfill_costs_the_cache_but_fails_nothing(
    command_env, openai_server, private_redis
):
    make_clips(200)
    env = {**command_env, "REDIS_URL": private_redis.url}
    private_redis.kill()

    code, output = finish(start_backfill(env, "-batch", "20"))

    assert code == 0, output
    for phrase in REDIS_DOWN:
        assert_said_once(output, phrase)
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])


@pytest.mark.redis
@pytest.mark.parametrize("stop", ["kill", "freeze"])
def test_redis_stopped_during_a_backfill_the_run_finishes_and_says_why_once(
    stop, command_env, openai_server, private_redis
):
    make_clips(300)
    openai_server.update_faults(latency_ms=100)
    env = {
        **command_env,
        "REDIS_URL": private_redis.url,
        "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20",
    }
    process = start_backfill(env, "-batch", "10", "--concurrency", "2")
    wait_for(lambda: openai_server.stats.ok >= 3)

    getattr(private_redis, stop)()
    code, output = finish(process)

    assert code == 0, output
    for phrase in REDIS_DOWN:
        assert_said_once(output, phrase)
    assert openai_server.stats.duplicates == 0
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])


API_DOWN = {
    "server errors": {"error_5xx_rate": 1.0},
    "dropped connections": {"drop_rate": 1.0},
    "html error pages": {"html_error_rate": 1.0},
}


def test_the_api_down_for_a_few_seconds_is_waited_out_and_the_run_succeeds(
    command_env, openai_server
):
    make_clips(200)
    openai_server.set_faults(drop_rate=0.5, error_5xx_rate=1.0)
    env = {
        **command_env,
        "EMBEDDING_MAX_INPUTS_PER_REQUEST": "50",
        "EMBEDDING_MAX_RETRIES": "10",  # backoff doubles to 30 s: ten tries outlast it
        "EMBEDDING_LOG_LEVEL": "INFO",
    }
    process = start_backfill(env, "--concurrency", "2")
    wait_for(lambda: openai_server.stats.requests >= 6)  # both requests refused, three times
    openai_server.set_faults()  # the API is back

    code, output = finish(process)

    assert code == 0, output
    assert "retrying a request" in output
    seen = openai_server.stats
    assert seen.dropped > 0 and seen.status_counts.get(500, 0) > 0
    assert seen.duplicates == 0
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])
    assert_no_claims_left()


@pytest.mark.parametrize("outage", [*API_DOWN, "hung requests"])
def test_an_outage_longer_than_the_retries_fails_cleanly_and_the_next_run_finishes(
    outage, command_env, openai_server
):
    make_clips(100)
    env = {**command_env, "EMBEDDING_MAX_RETRIES": "2"}
    if outage == "hung requests":
        openai_server.set_faults(latency_ms=2000)
        env["EMBEDDING_REQUEST_TIMEOUT"] = "0.5"
    else:
        openai_server.set_faults(**API_DOWN[outage])

    code, output = finish(start_backfill(env, "-batch", "25"))

    assert code == 1, output
    assert "Traceback" not in output
    assert "100 clips failed; they are recorded and the next run retries them" in output
    assert "gave up after 2 retries" in output
    assert not Clip.objects.filter(embedding__isnull=False).exists()
    errors = set(Clip.objects.values_list("embedding_error", flat=True))
    assert all(error.startswith("gave up after 2 retries") for error in errors), errors
    run = BackfillRun.objects.get()
    assert (run.status, run.failed) == ("failed", 100)
    assert "gave up" in run.error
    assert_no_claims_left()

    openai_server.set_faults()
    a_later_run_finishes_the_job(command_env, openai_server)
    assert not Clip.objects.filter(embedding_error__isnull=False).exists()


# -- bad answers: nothing wrong is stored, each case ends with a clear message ----------------

BAD_ANSWERS = {
    # fault: (exit code, what the message must say)
    "short": ({"short_rate": 1.0}, 1, "asked for 100 embeddings, got 99"),
    "some wrong length": ({"wrong_dimensions_rate": 1.0}, 1, "[767, 768] dimensions"),
    "all wrong length": ({"ignore_dimensions": True}, 2, "EMBEDDING_DIMENSIONS"),
    "nan": ({"nan_rate": 1.0}, 1, "NaN"),
    "malformed json": ({"malformed_json_rate": 1.0}, 1, "malformed response"),
    "html error page": ({"html_error_rate": 1.0}, 1, "502"),
    "unauthorized": ({"unauthorized": True}, 2, "OPENAI_API_KEY"),
    "insufficient quota": ({"insufficient_quota": True}, 1, "check billing"),
}


@pytest.mark.parametrize("answer", list(BAD_ANSWERS))
def test_every_answer_bad_stores_nothing_and_says_what_went_wrong(
    answer, command_env, openai_server
):
    faults, exit_code, message = BAD_ANSWERS[answer]
    make_clips(100)
    openai_server.set_faults(**faults)
    env = {**command_env, "EMBEDDING_MAX_RETRIES": "1"}

    code, output = finish(start_backfill(env))

    assert code == exit_code, output
    assert message in output
    assert "Traceback" not in output
    assert not Clip.objects.filter(embedding__isnull=False).exists()
    run = BackfillRun.objects.get()
    assert run.status == "failed"
    assert message in run.error
    assert_no_claims_left()

    openai_server.set_faults()
    a_later_run_finishes_the_job(command_env, openai_server)


def test_answers_in_shuffled_order_give_each_clip_its_own_vector(command_env, openai_server):
    make_clips(300)
    openai_server.set_faults(shuffle=True, seed=5)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "50"}

    code, output = finish(start_backfill(env, "-batch", "25"))

    assert code == 0, output
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])
    assert assert_nothing_wrong_stored() == 300


def test_answers_broken_now_and_then_are_retried_and_only_right_vectors_are_stored(
    command_env, openai_server
):
    make_clips(400)
    openai_server.set_faults(
        shuffle=True,
        short_rate=0.06,
        wrong_dimensions_rate=0.06,
        nan_rate=0.06,
        malformed_json_rate=0.06,
        html_error_rate=0.04,
        seed=11,
    )
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "10", "EMBEDDING_MAX_RETRIES": "8"}

    code, output = finish(start_backfill(env, "-batch", "10", "--concurrency", "4"))

    assert code == 0, output
    assert openai_server.stats.faulted > 5, "the faults must have come"
    assert assert_nothing_wrong_stored() == 400
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])


@pytest.mark.parametrize(
    ("fault", "exit_code", "message"),
    [("unauthorized", 2, "OPENAI_API_KEY"), ("insufficient_quota", 1, "check billing")],
)
def test_a_key_revoked_or_quota_spent_mid_run_stops_cleanly_and_keeps_what_was_right(
    fault, exit_code, message, command_env, openai_server
):
    make_clips(300)
    openai_server.update_faults(latency_ms=100)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "10"}
    process = start_backfill(env, "-batch", "10", "--concurrency", "1")
    wait_for(lambda: openai_server.stats.ok >= 3)

    openai_server.update_faults(**{fault: True})
    code, output = finish(process)

    assert code == exit_code, output
    assert message in output
    assert "Traceback" not in output
    assert 0 < assert_nothing_wrong_stored() < 300
    assert not Clip.objects.filter(embedding_error__isnull=False).exists(), "not the clips' fault"
    assert_no_claims_left()
    openai_server.set_faults()
    a_later_run_finishes_the_job(command_env, openai_server)


# -- hostile clip text ------------------------------------------------------------------------

HOSTILE_TITLES = {
    "empty": "",
    "whitespace": " \t\n\r ",
    "long ascii": "spam " * 10_000,
    "long emoji": "\U0001f525" * 50_000,  # the per-input cut falls inside a 4-byte character
    "emoji": "\U0001f525\U0001f480 CLUTCH 1v5 \U0001f451 \U0001f3f3\ufe0f\u200d\U0001f308",
    "right to left": "\u202eevil reversed\u202c \u200f\u05e9\u05dc\u05d5\u05dd\u200f "
    "\u0645\u0631\u062d\u0628\u0627 \u200e",
    "combining": "Z\u0351\u0352a\u0300\u0301\u0302l\u0336g\u0489o e\u0301",
    "precomposed": "Zalgo é",
    "sql": "'); DROP TABLE clips; --",
    "placeholders": "%s %(text)s {0} {text} $1 :name ? \\N \\.",
    "quotes and backslashes": "C:\\path\\\"quoted\"\\n'single' `tick`",
    "control characters": "tab\there\x01\x02\x07\x1b[31mred\x1b[0m\x7f\x0b\x0c\x1f end",
    "invisible": "\ufeff\u200b\u200c\u200d\u2028\u2029\u00ad",
}


def test_hostile_clip_text_is_embedded_exactly_or_skipped_with_a_reason(command_env, openai_server):
    clips = Clip.objects.bulk_create(
        Clip(twitch_clip_id=f"hostile {name}", title=title, broadcaster_name="streamer")
        for name, title in HOSTILE_TITLES.items()
    )
    nothing = Clip.objects.create(
        twitch_clip_id="blank", title="   ", broadcaster_name=" ", creator_name="", game_name=" "
    )
    sql_everywhere = Clip.objects.create(
        twitch_clip_id="x'); DELETE FROM clips; --",
        title="'; TRUNCATE embedding_claims; --",
        broadcaster_name="Robert'); DROP TABLE clips;--",
        creator_name="1' OR '1'='1",
        game_name='"; DROP TABLE "clips"; --',
    )

    code, output = finish(start_backfill(command_env, "-batch", "5"))

    assert code == 0, output
    assert "Total clips: 14" in output and "Skipped: 0" in output  # blank: nothing to embed
    assert Clip.objects.count() == len(clips) + 2, "the table lost rows"
    nothing.refresh_from_db()
    assert nothing.embedding is None
    assert nothing.embedding_error is None  # never sent, so never failed
    embedded = Clip.objects.exclude(pk=nothing.pk)
    assert not embedded.filter(embedding__isnull=True).exists()
    assert assert_nothing_wrong_stored() == len(clips) + 1
    texts = dict(Clip.objects.with_text().values_list("twitch_clip_id", "text"))
    sent = set(openai_server.stats.texts)
    assert as_sent(texts["hostile long emoji"]) in sent  # cut, never inside a character
    assert len(as_sent(texts["hostile long ascii"]).encode()) == MAX_INPUT_BYTES
    assert texts[sql_everywhere.twitch_clip_id] in sent
    assert "" not in sent and all(text.strip() for text in sent)


# -- secrets ----------------------------------------------------------------------------------

SECRET = "sk-proj.FAULTSUITE.canary-7f3e9a1b5c2d4e6f8a0b"


def _commands_to_run() -> list[tuple[dict, list[str], int | None]]:
    """(server faults, argv, exit code) for every command of this project, failures included.

    Each failure runs twice: as users see it, and with `--traceback`, which prints the
    exception's text and frames (and, being Django's re-raise, always exits 1)."""
    loud = ["-v", "3"]
    failures: list[tuple[dict, list[str], int | None]] = [
        ({"unauthorized": True}, ["backfill_embeddings", "--force", *loud], 2),
        ({"insufficient_quota": True}, ["backfill_embeddings", "--force", *loud], 1),
        ({}, ["backfill_embeddings", "-batch", "0", *loud], 2),
        ({}, ["backfill_embeddings", "--no-such-flag", *loud], 2),
        ({}, ["load_demo_clips", "--count", "0", *loud], 2),
    ]
    runs: list[tuple[dict, list[str], int | None]] = [
        ({"error_5xx_rate": 0.3, "drop_rate": 0.2, "seed": 2}, ["backfill_embeddings", *loud], 0),
        ({}, ["backfill_embeddings", "--estimate", *loud], 0),
        ({}, ["backfill_embeddings", "--estimate", "--json", *loud], 0),
        ({}, ["backfill_embeddings", "--dry-run", "--force", *loud], 0),
        ({}, ["backfill_embeddings", "--json", "--force", *loud], 0),
        ({}, ["load_demo_clips", "--count", "20", *loud], 0),
        *failures,
    ]
    for faults, argv, _code in failures:
        runs.append((faults, [*argv, "--traceback"], 2 if "--no-such-flag" in argv else 1))
    ours = sorted(name for name, app in get_commands().items() if app == "embeddings")
    runs += [({}, [name, "--help"], 0) for name in ours]
    if "search_clips" in ours:  # another engineer's command: whatever it answers, no key
        runs.append(({}, ["search_clips", "clutch ace", *loud], None))
        runs.append(({}, ["search_clips", "clutch ace", *loud, "--traceback"], None))
    return runs


def test_the_api_key_appears_in_no_output_run_record_or_clip_error(command_env, openai_server):
    make_clips(30)
    env = {
        **command_env,
        "OPENAI_API_KEY": SECRET,
        "EMBEDDING_LOG_LEVEL": "DEBUG",
        "OPENAI_LOG": "debug",  # the client's own request logging too
        "EMBEDDING_MAX_RETRIES": "8",
    }
    for number, (faults, argv, exit_code) in enumerate(_commands_to_run()):
        openai_server.set_faults(**faults)
        cold = {"EMBEDDING_MODEL": f"{command_env['EMBEDDING_MODEL']}-{number}"}  # no cache hits

        code, output = manage({**env, **cold}, *argv)

        command = " ".join(argv)
        assert exit_code is None or code == exit_code, f"`{command}` exited {code}:\n{output}"
        assert SECRET not in output, f"`{command}` printed the key"
        assert SECRET[-16:] not in output, f"`{command}` printed part of the key"

    assert openai_server.stats.status_counts.get(401), "the 401 path must have run"
    assert BackfillRun.objects.filter(status="failed").count() == 4
    for run in BackfillRun.objects.all():
        for field in run._meta.fields:
            value = getattr(run, field.attname)
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            assert SECRET[-16:] not in text, f"BackfillRun.{field.name} holds the key"
    errors = Clip.objects.exclude(embedding_error=None).values_list("embedding_error", flat=True)
    assert not [error for error in errors if SECRET[-16:] in error]
