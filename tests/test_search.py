"""Semantic search as a user meets it: nearest clips first, only live clips with a current
vector, the HNSW index doing the work, and the `search_clips` command's output and exit codes.

The test server's vectors are random per text, so its only "meaning" is identity: a query
equal to a clip's embedded text finds that clip at distance 0, everything else is random.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from embeddings.models import Clip
from embeddings.search.vector import (
    SEARCH_SETTINGS_SQL,
    SearchError,
    search_coverage,
    similar_clips,
)
from tests.support.clips import make_clips
from tests.support.commands import backfill
from tests.support.openai_server import expected_vector

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent
DIMENSIONS = 768


def embedded_clips(count: int, *backfill_args: str) -> list[Clip]:
    clips = make_clips(count)
    backfill(*backfill_args)
    return clips


def twin_of(index: int) -> Clip:
    """A new, unembedded clip whose text equals that of `make_clips`' clip number `index`."""
    return Clip.objects.create(
        twitch_clip_id=f"twin-{index}",
        title=f"Clip number {index}",
        broadcaster_name=f"streamer{index % 7}",
        creator_name=f"viewer{index % 11}",
        game_name=["Valorant", "Minecraft", None][index % 3],
    )


def text_of(clip: Clip) -> str:
    return Clip.objects.with_text().values_list("text", flat=True).get(pk=clip.pk)


def exact_nearest(query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Index-free truth: cosine distance to every live clip with a current vector, in numpy."""
    texts = dict(
        Clip.objects.live()
        .current("text-embedding-3-small", DIMENSIONS)
        .with_text()
        .values_list("id", "text")
    )
    ids = np.array(list(texts))
    matrix = np.stack([expected_vector(text, DIMENSIONS) for text in texts.values()])
    distances = 1.0 - matrix.astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(distances, kind="stable")[:k]
    return [(int(ids[i]), float(distances[i])) for i in order]


def search(*args: str, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("search_clips", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def search_with_plan(query: str, k: int = 10) -> tuple[list[Clip], str]:
    """`similar_to(query)` and the EXPLAIN of the very SQL it ran, under its own settings."""
    with CaptureQueriesContext(connection) as queries:
        found = Clip.objects.similar_to(query, k=k)
    search_sql = next(q["sql"] for q in queries.captured_queries if "<=>" in q["sql"])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS_SQL, ["40"])
        cursor.execute("EXPLAIN " + search_sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return found, plan


def test_a_clip_is_its_own_nearest_neighbour_and_a_repeated_query_costs_no_api_call(
    embedding_config, openai_server
):
    embedding_config()
    clips = embedded_clips(60)
    target = clips[17]
    requests = openai_server.stats.requests

    found = Clip.objects.similar_to(text_of(target), k=10)

    assert found[0].pk == target.pk
    assert found[0].distance == pytest.approx(0.0, abs=1e-5)
    assert len(found) == 10
    assert [c.distance for c in found] == sorted(c.distance for c in found)
    assert openai_server.stats.requests == requests  # the backfill cached that very text

    first = Clip.objects.similar_to("a question nobody asked before", k=10)
    again = Clip.objects.similar_to("a question nobody asked before", k=10)

    assert [c.pk for c in again] == [c.pk for c in first]
    assert openai_server.stats.requests == requests + 1


def test_similar_to_a_clip_leaves_it_out_and_ranks_the_others_by_distance(
    embedding_config, openai_server
):
    embedding_config()
    clips = embedded_clips(60)
    target = clips[5]
    requests = openai_server.stats.requests

    found = Clip.objects.similar_to(target, k=8)

    assert target.pk not in {c.pk for c in found}
    truth = exact_nearest(expected_vector(text_of(target), DIMENSIONS), 9)[1:]
    assert [c.pk for c in found] == [pk for pk, _ in truth]
    np.testing.assert_allclose([c.distance for c in found], [d for _, d in truth], atol=1e-5)
    assert openai_server.stats.requests == requests  # its stored vector, no API call
    assert [c.pk for c in similar_clips(target, 8)] == [c.pk for c in found]


def test_a_clip_without_a_vector_is_searched_by_its_text_but_its_admin_page_calls_no_api(
    embedding_config, openai_server
):
    embedding_config()
    clips = embedded_clips(30)
    fresh = twin_of(3)
    requests = openai_server.stats.requests

    assert similar_clips(fresh, 5) == []
    assert openai_server.stats.requests == requests

    found = Clip.objects.similar_to(fresh, k=5)

    # Same text as clips[3], so the same vector: that clip is at distance 0.
    assert found[0].pk == clips[3].pk
    assert found[0].distance == pytest.approx(0.0, abs=1e-5)
    assert fresh.pk not in {c.pk for c in found}


def test_removed_clips_never_appear_even_at_distance_zero(embedding_config):
    embedding_config()
    clips = embedded_clips(50)
    removed = clips[::5]
    Clip.objects.filter(pk__in=[c.pk for c in removed]).update(is_removed=True)

    found = Clip.objects.similar_to(text_of(removed[2]), k=1000)

    assert {c.pk for c in found}.isdisjoint(c.pk for c in removed)
    assert len(found) == 40
    assert found[0].distance > 0.5


def test_stale_and_unembedded_clips_never_appear(embedding_config):
    embedding_config()
    clips = embedded_clips(40)
    stale, other_model = clips[3], clips[4]
    old_text = text_of(stale)
    Clip.objects.filter(pk=stale.pk).update(title="A new title nobody embedded")
    Clip.objects.filter(pk=other_model.pk).update(embedding_model="text-embedding-ada-002")
    unembedded = twin_of(3)

    found = Clip.objects.similar_to(old_text, k=1000)

    ids = {c.pk for c in found}
    assert stale.pk not in ids  # its vector still matches old_text exactly: it would be first
    assert other_model.pk not in ids and unembedded.pk not in ids
    assert ids == set(
        Clip.objects.live()
        .current("text-embedding-3-small", DIMENSIONS)
        .values_list("pk", flat=True)
    )


def test_the_hnsw_path_agrees_with_exact_search(embedding_config):
    embedding_config()
    make_clips(300, removed_every=10)
    backfill("--rebuild-index")
    recalls = []
    for n in range(20):
        query = f"what people search for, number {n}"
        found, plan = search_with_plan(query)
        assert "Index Scan using clips_embedding_hnsw" in plan, plan
        truth = exact_nearest(expected_vector(query, DIMENSIONS), 300)
        recalls.append(len({c.pk for c in found} & {pk for pk, _ in truth[:10]}) / 10)
        exact = dict(truth)
        np.testing.assert_allclose(
            [c.distance for c in found], [exact[c.pk] for c in found], atol=1e-5
        )
        assert [c.distance for c in found] == sorted(c.distance for c in found)
        assert len(found) == 10

    assert np.mean(recalls) >= 0.95, recalls


def test_explain_of_the_search_query_uses_the_hnsw_index(embedding_config):
    embedding_config()
    make_clips(2000, removed_every=20)
    backfill("--rebuild-index")
    Clip.objects.filter(pk__in=Clip.objects.order_by("pk").values("pk")[:50]).update(
        title="edited: stale vector"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE clips")

    found, plan = search_with_plan("Title: Clip number 1234. Broadcaster: x")

    assert "Index Scan using clips_embedding_hnsw" in plan, plan
    assert len(found) == 10


def test_the_search_settings_end_with_the_search(embedding_config):
    embedding_config()
    embedded_clips(20)

    Clip.objects.similar_to("anything at all", k=3, ef_search=123)

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_seqscan')")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SELECT current_setting('hnsw.ef_search', true)")
        assert cursor.fetchone()[0] in (None, "", "40")


def test_ef_search_and_k_out_of_range_are_refused(embedding_config):
    embedding_config()
    embedded_clips(5)

    with pytest.raises(SearchError, match="ef_search"):
        Clip.objects.similar_to("anything", k=3, ef_search=0)
    with pytest.raises(SearchError, match="k must be"):
        Clip.objects.similar_to("anything", k=0)


def test_coverage_counts_live_clips_with_a_current_vector(embedding_config):
    config = embedding_config()
    make_clips(10, removed_every=5)  # 2 removed, 8 live
    backfill("--limit", "3")

    coverage = search_coverage(Clip.objects.all(), config)

    assert (coverage.live, coverage.searchable) == (8, 3)
    assert coverage.low


def test_command_prints_rank_distance_title_broadcaster_and_game(embedding_config):
    embedding_config()
    clips = embedded_clips(30)

    out, err = search(text_of(clips[4]), "-k", "3")

    lines = out.splitlines()
    # Hybrid (the default): the fused score the rows are ordered by, then the distance.
    assert lines[0].split() == ["rank", "score", "distance", "title", "broadcaster", "game"]
    assert len(lines) == 4
    assert lines[1].split()[0] == "1" and lines[1].split()[2] == "0.0000"
    assert "Clip number 4" in lines[1] and "streamer4" in lines[1] and "Minecraft" in lines[1]
    assert err == ""


def test_command_json_lists_the_clips_nearest_first(embedding_config):
    embedding_config()
    clips = embedded_clips(30)

    out, _ = search(text_of(clips[9]), "--json", k=5)

    data = json.loads(out)
    assert len(data) == 5
    assert data[0]["id"] == clips[9].pk and data[0]["distance"] == pytest.approx(0, abs=1e-5)
    assert {"id", "distance", "title", "broadcaster_name", "game_name"} <= set(data[0])
    assert (data[0]["title"], data[0]["broadcaster_name"], data[0]["game_name"]) == (
        "Clip number 9",
        "streamer2",
        "Valorant",
    )
    assert [d["distance"] for d in data] == sorted(d["distance"] for d in data)


def test_command_warns_when_few_clips_are_searchable(embedding_config):
    embedding_config()
    make_clips(10)
    backfill("--limit", "4")

    out, err = search("Title: Clip number 1", "--json")

    assert "Only 4 of 10 live clips (40%)" in err and "backfill_embeddings" in err
    assert len(json.loads(out)) == 4


@pytest.mark.parametrize("k", ["0", "1001", "-3"])
def test_command_k_out_of_range_is_a_usage_error(embedding_config, k):
    embedding_config()

    with pytest.raises(CommandError, match="-k must be between 1 and 1000") as err:
        search("anything", "-k", k)

    assert err.value.returncode == 2


def test_command_without_a_key_exits_2_naming_the_variable(embedding_config):
    embedding_config(OPENAI_API_KEY=None)
    make_clips(3)

    with pytest.raises(CommandError, match="OPENAI_API_KEY") as err:
        search("anything")

    assert err.value.returncode == 2


def test_command_as_a_process_exit_codes_and_clean_json_stdout(command_env):
    make_clips(5)  # none embedded with the subprocess's model

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "search_clips", *args],
            cwd=ROOT,
            env={**command_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("zelda speedrun", "--json")
    bad_k = run("zelda", "-k", "0")
    no_key = run("zelda", OPENAI_API_KEY="")

    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    assert "Only 0 of 5 live clips" in ok.stderr
    assert bad_k.returncode == 2 and "-k must be between 1 and 1000" in bad_k.stderr
    assert no_key.returncode == 2 and "OPENAI_API_KEY" in no_key.stderr
